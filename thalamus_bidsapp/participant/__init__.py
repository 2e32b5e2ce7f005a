"""The participant level: one run over the requested sessions.

``runner`` drives a run (:func:`~thalamus_bidsapp.participant.runner.run_participant`):
``plan`` finds the sessions, checks their inputs (``preflight``) and chooses
the methods; ``engine`` runs the nipype workflow with the processes and threads
of ``resources``; ``tracking`` follows each session's nodes and publishes a
session once all of them have finished; ``logs``, ``timings`` and
``provenance`` write the run's records under ``logs/<run>/``; ``interrupts``
stops the run cleanly on SIGINT or SIGTERM.
"""
