"""The local backend runs on the host, so the host is its builder image: does it hold what the lock pins?

The lock pins every package of a debootstrap image (`images: debian`); a package the host lacks (a cgo
library added to `builders/debian/image.yaml`, say) fails the local build late and obscurely, and one at
another version may change the bytes. This compares the host's dpkg database with the pins, once per image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reprobuild import proc
from reprobuild.errors import EnvironmentFailure


@dataclass(frozen=True)
class HostDifference:
    image: str
    missing: tuple[str, ...]  # pinned packages not installed on the host
    other_versions: tuple[str, ...]  # installed at another version than the pin

    def warning(self) -> str | None:
        """One line for the user when the host lacks pinned packages (a build needing them fails), else None.

        Other versions are common (a host a point release ahead) and only logged (`-v`): see `versions`."""
        if not self.missing:
            return None
        shown = ", ".join(self.missing[:8]) + (f" and {len(self.missing) - 8} more" if len(self.missing) > 8 else "")
        return (f"local backend: this host lacks {len(self.missing)} package(s) the lock pins for the `{self.image}` "
                f"image: {shown} (`apt-get install {' '.join(self.missing[:8])}`, or use the Docker backend)")

    def versions(self) -> str | None:
        if not self.other_versions:
            return None
        return (f"local backend: {len(self.other_versions)} package(s) of the `{self.image}` image are at other "
                f"versions on this host: {', '.join(self.other_versions)}")


def installed_packages() -> dict[str, str] | None:
    """The host's installed Debian packages (name -> version), or None where there is no dpkg."""
    try:
        done = proc.run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Status}\n"], check=False,
                        timeout=60)
    except EnvironmentFailure:
        return None
    if done.returncode != 0:
        return None
    found = {}
    for line in done.stdout.splitlines():
        name, _, rest = line.partition("\t")
        version, _, status = rest.partition("\t")
        if status == "installed":
            found[name] = version
    return found


def compare(image: str, pins: Mapping[str, str], host: Mapping[str, str]) -> HostDifference:
    missing = tuple(sorted(n for n in pins if n not in host))
    other = tuple(sorted(f"{n} {host[n]} (pinned {v})" for n, v in pins.items() if n in host and host[n] != v))
    return HostDifference(image, missing, other)
