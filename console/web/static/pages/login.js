// Sign in with password and one-time code; the relay answers with an HttpOnly cookie.

import { api, ApiError } from "../lib/api.js";
import { h, notice } from "../lib/dom.js";

export function render(root, ctx) {
  const message = h("p", { id: "login-message", role: "alert", hidden: true });
  const username = h("input", { id: "username", name: "username", autocomplete: "username", required: true });
  const password = h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const otp = h("input", { id: "otp", name: "otp", inputmode: "numeric", autocomplete: "one-time-code", pattern: "[0-9]{6}", maxlength: "6", placeholder: "6 digits" });
  const submit = h("button", { type: "submit", id: "sign-in" }, "Sign in");
  const form = h(
    "form",
    { class: "card login", id: "login-form" },
    h("h1", {}, "Sign in to Helpline"),
    h("label", {}, "User name", username),
    h("label", {}, "Password", password),
    h("label", {}, "One-time code (authenticator app)", otp),
    submit,
    message,
  );
  if (ctx.expired) notice(message, "info", ctx.expired);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    notice(message, "info", "Signing in…");
    try {
      const session = await api("POST", "/web/login", {
        username: username.value.trim(),
        password: password.value,
        otp: otp.value.trim(),
      });
      ctx.signedIn(session);
    } catch (error) {
      password.value = "";
      otp.value = "";
      if (error instanceof ApiError && error.status === 429) {
        notice(message, "error", `Sign-in refused: ${error.message}.`);
      } else if (error instanceof ApiError && error.status === 401) {
        notice(message, "error", "Sign-in failed: the user name, password or one-time code is wrong.");
      } else {
        notice(message, "error", `Sign-in failed: ${error.message}`);
      }
    } finally {
      submit.disabled = false;
    }
  });
  root.append(form);
  username.focus();
}
