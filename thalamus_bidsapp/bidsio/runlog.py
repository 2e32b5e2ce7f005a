"""Names shared by the participant run logs (``logs/<run>/``) and the group level and reports that read them."""

from __future__ import annotations

#: Written beside a participant run's ``sessions.tsv``: which process runs it, to tell a live run from a killed one.
PROCESS_FILE = "process.json"
#: A session's status in ``sessions.tsv`` while its participant run is in progress.
RUNNING = "running"
#: The group level's log file, in its own ``logs/<run>/`` folder; the group report links the newest.
GROUP_LOG = "group.log"
#: Each subject's outcome of a participant run's longitudinal step (``ok: ...``, ``skipped: ...``,
#: ``failed: ...``) by ``sub-<label>``; the participant report reads the newest.
LONGITUDINAL_LOG = "longitudinal.json"
