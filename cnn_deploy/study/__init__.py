"""The thesis's study over many measurements: sweeps (:mod:`.sweep`), the report
(:mod:`.report`) and run-to-run comparison (:mod:`.compare`)."""
