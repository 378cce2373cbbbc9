"""The one progress-callback type of the library (a leaf module: no imports beyond the standard library).

Long-running library calls take ``on_progress: ProgressFn | None``: called from the calling thread
as ``on_progress(done, total)``, the last call with ``done == total``; ``None`` is silent. The
library prints nothing itself: the CLI renders the calls with rich (``cli/progress.py``), the
viewer with ``st.progress``.
"""

from collections.abc import Callable

ProgressFn = Callable[[int, int], None]

__all__ = ["ProgressFn"]
