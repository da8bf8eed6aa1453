"""The job queue: `job` (one file's state), `table_model` (Qt model of the queue), `controller`
(dispatches jobs to the worker, applies its events, saves finished transcripts)."""
