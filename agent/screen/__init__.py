"""Screen ``view`` and ``control`` sessions on the agent: capture, tiles, input.

* :mod:`.capture`: the monitors (RandR 1.5 monitors as the X server reports them,
  else mss's) and grabbing one of them with mss, on a thread of its own;
* :mod:`.tiles`: which tiles changed (numpy) and their encoding (Pillow);
* :mod:`.keymap` and :mod:`.injector`: browser key codes and pointer events
  replayed with pynput;
* :mod:`.streamer`: one session: frames paced by the viewer's acknowledgements,
  monitor and mode switches, input under ``control`` consent only.

The wire format is :mod:`protocol.screen`.
"""
