"""Built-in validation suites shipped with the pipeline (run by TestinfraHook)."""
