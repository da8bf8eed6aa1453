"""The worker process: all model work runs here, off the GUI process.

* `protocol` - the plain-dict messages both sides exchange;
* `process`  - the child's main loop (spawned; imports engine/torch);
* `client`   - the GUI side: owns the process, polls its events, emits Qt signals.
"""
