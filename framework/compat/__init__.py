"""Work-arounds of third-party internals, all in one place.

Each module names the upstream version it was written against, says why it exists, and has a
test in ``tests/unit/test_compat.py`` that fails when upstream no longer needs it (or when the
internal it relies on is gone), so a work-around never outlives its reason silently.

* ``ray_loopback``: Ray 2.60 rewrites a 127.0.0.1 node address into the machine's routable one;
  a local Ray started by the framework stays on loopback.
* ``ray_serve``: Ray 2.60 has no public way to read the HTTP options of a running Serve
  instance; ``serve.start`` silently keeps the old ones.
* ``ray_direct_ingress``: Ray 2.60's direct ingress (ingress replicas on their own ports, no
  proxy hop) is a set of environment flags, its replica sockets lack SO_REUSEADDR, and replica
  ports are read from the controller.
* ``ray_auth_notice``: Ray 2.60 logs a WARNING whenever a local cluster starts with its default
  token authentication; the framework says it once in its own words instead.
"""
