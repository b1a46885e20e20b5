"""Writing a file so that a crash or a full disk leaves the old file or the new one, never half.

Every small file the app writes (settings, Hub settings, remote keys, manifests) goes through
:func:`write_atomic`: the data goes to a temporary file in the same folder, which then replaces the
target in one rename.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, *, private: bool = False) -> None:
    """Write ``data`` (text is UTF-8) to ``path`` atomically, creating its folder if needed.

    ``private``: the file is readable by its owner only (mode 0600), e.g. because it holds a
    token. Otherwise it gets the usual permissions of a new file (0666 less the umask).

    Raises:
        OSError: the folder or the file cannot be written (permissions, full disk); the old file
            is left as it was and no temporary file remains.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        if not private:  # mkstemp creates 0600; give a normal file the umask's permissions
            umask = os.umask(0)
            os.umask(umask)
            temporary.chmod(0o666 & ~umask)
        temporary.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
