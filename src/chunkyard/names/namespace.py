"""Backup namespaces: up to 7 SAFE_ID components below the root, at most 256 characters."""

from __future__ import annotations

from dataclasses import dataclass

from chunkyard.errors import InvalidName
from chunkyard.names.patterns import SAFE_ID_RE

MAX_NAMESPACE_DEPTH = 7
MAX_NAMESPACE_LENGTH = 256
MAX_COMPONENT_CREATE_LENGTH = 32


def _push(components: list[str], length: int, component: str, whole: str) -> int:
    """Append one component with PBS's `push_do` checks; returns the new string length."""
    if len(components) >= MAX_NAMESPACE_DEPTH:
        raise InvalidName(
            f"namespace {whole!r}: too deep, at most {MAX_NAMESPACE_DEPTH} levels below the root"
        )
    if length + len(component) + 1 > MAX_NAMESPACE_LENGTH:
        raise InvalidName(
            f"namespace {whole!r}: longer than {MAX_NAMESPACE_LENGTH} characters"
        )
    if "/" in component or not SAFE_ID_RE.match(component):
        raise InvalidName(f"namespace {whole!r}: component {component!r} is not a valid name")
    components.append(component)
    return length + len(component) + 1


@dataclass(frozen=True, order=True, slots=True)
class BackupNamespace:
    """A namespace as a tuple of components; the root is the empty tuple.

    Ordering is by the component tuple, so an ancestor sorts before its descendants and
    every subtree is a contiguous range: the lock order of the locking design relies on it.
    """

    components: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Validate however the value was built, so no raw tuple can name a bad path."""
        if not isinstance(self.components, tuple):
            raise InvalidName(f"namespace components must be a tuple, not "
                              f"{type(self.components).__name__}")
        length = 0
        checked: list[str] = []
        whole = "/".join(str(c) for c in self.components)
        for component in self.components:
            if not isinstance(component, str):
                raise InvalidName(f"namespace {whole!r}: component {component!r} is not a string")
            length = _push(checked, length, component, whole)

    @classmethod
    def root(cls) -> BackupNamespace:
        return cls(())

    @classmethod
    def parse(cls, text: str) -> BackupNamespace:
        """Parse the API form `a/b/c` (the root is the empty string)."""
        if not isinstance(text, str):
            raise InvalidName(f"namespace must be a string, not {type(text).__name__}")
        if text == "":
            return cls(())
        return cls(tuple(text.split("/")))

    @classmethod
    def from_path(cls, path: str) -> BackupNamespace:
        """Parse the on-disk form `ns/a/ns/b` (relative to the datastore root)."""
        parts = [p for p in path.strip("/").split("/")] if path.strip("/") else []
        if len(parts) % 2:
            raise InvalidName(f"namespace path {path!r}: expected pairs of 'ns/<name>'")
        for marker in parts[0::2]:
            if marker != "ns":
                raise InvalidName(f"namespace path {path!r}: expected 'ns', found {marker!r}")
        return cls(tuple(parts[1::2]))

    @property
    def depth(self) -> int:
        return len(self.components)

    @property
    def is_root(self) -> bool:
        return not self.components

    @property
    def name(self) -> str:
        """The last component ('' for the root)."""
        return self.components[-1] if self.components else ""

    @property
    def parent(self) -> BackupNamespace:
        if not self.components:
            raise InvalidName("the root namespace has no parent")
        return BackupNamespace(self.components[:-1])

    def child(self, name: str) -> BackupNamespace:
        """The namespace `self/name`, validated like any other."""
        if "/" in name:
            raise InvalidName(f"namespace component {name!r} must not contain '/'")
        return BackupNamespace.parse(f"{self}/{name}" if self.components else name)

    def is_ancestor_of(self, other: BackupNamespace) -> bool:
        """True if `other` lies strictly below `self`."""
        n = len(self.components)
        return len(other.components) > n and other.components[:n] == self.components

    def contains(self, other: BackupNamespace) -> bool:
        """True if `other` is `self` or lies below it."""
        return other == self or self.is_ancestor_of(other)

    def ancestors(self) -> list[BackupNamespace]:
        """Root first, excluding `self`."""
        return [BackupNamespace(self.components[:i]) for i in range(len(self.components))]

    def rebase(self, source: BackupNamespace, target: BackupNamespace) -> BackupNamespace:
        """Map a namespace inside `source` to the same place inside `target`."""
        if not source.contains(self):
            raise InvalidName(f"namespace {self} is not inside {source}")
        return BackupNamespace.parse(
            "/".join(target.components + self.components[len(source.components):])
        )

    def path_parts(self) -> list[str]:
        """The on-disk relative parts: `['ns', 'a', 'ns', 'b']`."""
        parts: list[str] = []
        for c in self.components:
            parts += ["ns", c]
        return parts

    def display(self) -> str:
        """For messages: the root is shown as '<root>'."""
        return str(self) if self.components else "<root>"

    def __str__(self) -> str:
        return "/".join(self.components)
