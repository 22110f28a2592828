"""The ``fexaot-integration`` package: rebuild caches after upgrades and in the background.

Built from ``packaging/debian-integration/`` (see docs/packaging.md):

- ``triggers``: ``interest-noawait`` on the library and program directories, so
  dpkg runs the postinst (``triggered``) after any package changes files there;
- ``postinst``: on ``configure`` and ``triggered``, starts
  ``fexaot-rebuild.service`` when systemd runs the machine, else (and under
  ``dpkg --root``, where ``DPKG_ROOT`` names the rootfs) runs the rebuild itself;
- ``/usr/libexec/fexaot/fexaot-rebuild``: ``fexaot rebuild`` with the settings of
  ``/etc/default/fexaot-rebuild`` (a conffile);
- ``fexaot-rebuild.service`` (oneshot, ``Nice=19``, idle CPU and I/O classes,
  ``ConditionACPower=true``, an ``ExecCondition`` that waits for a low load)
  and ``fexaot-rebuild.timer`` (daily and after boot, persistent).
"""

from __future__ import annotations

import email.utils
from datetime import datetime, timezone
from pathlib import Path

from fexaot_tool import __version__
from fexaot_tool.package.archive import DebControl, Member, gzip_bytes, write_deb

SOURCE = Path(__file__).resolve().parent.parent.parent / "packaging" / "debian-integration"
PACKAGE = "fexaot-integration"
UNIT_DIR = "lib/systemd/system"  # Debian 12's systemd unit directory for packages

# (path inside the package, file in SOURCE, mode)
DATA = (
    ("etc/default/fexaot-rebuild", "default", 0o644),
    ("usr/libexec/fexaot/fexaot-rebuild", "fexaot-rebuild", 0o755),
    ("usr/libexec/fexaot/fexaot-idle", "fexaot-idle", 0o755),
    (f"{UNIT_DIR}/fexaot-rebuild.service", "fexaot-rebuild.service", 0o644),
    (f"{UNIT_DIR}/fexaot-rebuild.timer", "fexaot-rebuild.timer", 0o644),
    (f"usr/share/doc/{PACKAGE}/README", "README", 0o644),  # the units' Documentation=
)
CONTROL = (("postinst", "postinst", 0o755), ("triggers", "triggers", 0o644))


def build_integration_deb(output: str, epoch: int, maintainer: str, source: Path = SOURCE) -> None:
    version = __version__
    doc = f"usr/share/doc/{PACKAGE}"
    stamp = email.utils.format_datetime(datetime.fromtimestamp(epoch, timezone.utc))
    changelog = (f"{PACKAGE} ({version}) unstable; urgency=medium\n\n"
                 f"  * fexaot {version}.\n\n -- {maintainer}  {stamp}\n")
    members = [Member(path, source=str(source / name), mode=mode) for path, name, mode in DATA]
    members += [Member(f"{doc}/changelog.gz", data=gzip_bytes(changelog.encode("utf-8"))),
                Member(f"{doc}/copyright", source=str(source / "copyright"))]
    control_members = [Member(path, source=str(source / name), mode=mode) for path, name, mode in CONTROL]
    control_members.append(Member("conffiles", data=b"/etc/default/fexaot-rebuild\n"))
    control = DebControl(
        package=PACKAGE, version=version, maintainer=maintainer,
        synopsis="rebuild fexaot translation caches after upgrades and when idle",
        description=("A dpkg trigger rebuilds the AArch64 translation caches of the\n"
                     "x86-64 executables and libraries whose content changed, and a\n"
                     "systemd timer does it in the background, on AC power, when the\n"
                     "machine is idle.  Caches no file needs any more are collected."),
        section="admin")
    write_deb(output, control, members, epoch, control_members)
