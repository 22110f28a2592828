"""Guest paths to host paths: the rootfs first, then the host, as FEX's rootfs overlay does.

With the rootfs ``/`` a guest path is a host path and nothing is translated.
Otherwise an absolute guest path is resolved inside the rootfs with the elf
layer's confined resolution (absolute symlinks restart at the rootfs root,
``..`` never climbs out); when its directory does not exist there, the host's
own path is used, so ``/proc``, ``/dev``, ``/tmp`` and files outside the image
still work.  ``/proc``, ``/sys`` and ``/dev`` always come from the host: an
unpacked image may hold empty directories of those names.

A :class:`~fexaot_tool.elf.Rootfs` memoises lookups and assumes the tree does
not change, while a guest creates and deletes files; so every translation uses
a fresh one (a few ``lstat`` calls).  Relative paths are left to the host
kernel, relative to the working directory, which is a host directory.
"""

from __future__ import annotations

import os

from fexaot_tool.elf.rootfs import Rootfs, RootfsError

HOST_ONLY_TREES = ("/proc", "/sys", "/dev")


class GuestPaths:
    def __init__(self, root: str):
        self.root = os.path.realpath(root)
        self.identity = self.root == "/"

    def to_host(self, path: str, follow: bool = True, fallback: bool = True) -> str:
        """The host path a system call should use for guest ``path``.

        ``follow``: a symlink in the last component is resolved inside the rootfs
        (open, stat, execve); without it the link itself is named (lstat,
        readlink, unlink, rename), so only the directory part is resolved.
        ``fallback=False`` never leaves the rootfs (programs and their loaders
        must come from it): a path missing there names a missing file in it.
        """
        if self.identity or not path.startswith("/"):
            return path
        if fallback and any(path == tree or path.startswith(tree + "/") for tree in HOST_ONLY_TREES):
            return path
        rootfs = Rootfs(self.root)
        head, _, tail = path.rstrip("/").rpartition("/")
        try:
            if follow or tail in ("", ".", ".."):
                entry = rootfs.lookup(path)
                if entry is not None:
                    return rootfs.host(entry.path)
            parent = rootfs.lookup(head or "/")
        except RootfsError:
            # A symlink loop in the rootfs: name the path in the rootfs, where the
            # host kernel will meet the same loop and return ELOOP.
            return self.root + path
        if parent is None or not parent.is_dir:
            return path if fallback else self.root + path
        return rootfs.host(parent.path).rstrip("/") + "/" + tail

    def to_guest(self, host_path: str) -> str:
        """The guest's name for a host path (inside the rootfs: without its prefix)."""
        if self.identity:
            return host_path
        if host_path == self.root:
            return "/"
        if host_path.startswith(self.root + "/"):
            return host_path[len(self.root):]
        return host_path
