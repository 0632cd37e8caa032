"""Software update pushes on the relay: stored packages, rollouts in batches with a halt
on failures, the relay's own technician leg that delivers a package to one device, and
the REST API's helpers. See :mod:`relay.updates.engine` for how a rollout runs."""
