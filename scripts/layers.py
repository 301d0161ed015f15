#!/usr/bin/env python3
"""Checks the import layering of one crate; scripts/layers.sh runs it on each.

    python3 scripts/layers.py CRATE_DIR "layer 0 modules" "layer 1 modules" ...
    python3 scripts/layers.py --graph CRATE_DIR    what each file uses

Each argument after the crate's directory is a layer, lowest first: names of
the crate's top-level modules. A module may use only modules of a lower
layer, and the files of one module may not use each other in a circle (a
parent calling into its child while the child uses the parent's items is
one: move what both need into a leaf module). Every module must be in a
layer. Findings go to stderr, one a line; the exit status is then 1.

The crate is read the way rustc names things rather than line by line: the
module tree from `mod` declarations (so `self::`, `super::` and
`super::super::` name real modules), `use` trees with braces at any depth and
over any number of lines, paths in code (`crate::sys::cores()`,
`child::run()`), and re-exports (`pub use` in lib.rs or in any module)
followed to the file that defines the item, because a re-export would
otherwise hide where a dependency goes. A lexer drops comments and string
literals: doc links and messages name paths that are no dependency.

Exempt, as test code that may stand in for any layer: `#[cfg(test)]` items
and the files they declare, `tests.rs` files and the `testing` module. The
crate root (lib.rs, main.rs, src/bin/*) is not checked and its own items
count as below every layer: it is the index every module sees.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field

# ---------------------------------------------------------------- lexing

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NUMBER = re.compile(r"[0-9][0-9A-Za-z_]*(\.[0-9][0-9A-Za-z_]*)?")
RAW_STRING = re.compile(r'(?:b|c)?r(#*)"')


@dataclass
class Tok:
    text: str
    line: int


def lex(src: str) -> list[Tok]:
    """Identifiers, `::` and single punctuation characters, with their line.

    Comments, string and char literals, lifetimes and numbers yield nothing,
    so a path inside them is never read as a use and a `'{'` opens no block.
    """
    toks: list[Tok] = []
    i, n, line = 0, len(src), 1
    while i < n:
        c, start = src[i], i
        glued = i > 0 and (src[i - 1].isalnum() or src[i - 1] == "_")
        if c.isspace():
            i += 1
        elif src.startswith("//", i):
            i = src.find("\n", i)
            i = n if i < 0 else i
        elif src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif not glued and (m := RAW_STRING.match(src, i)):
            close = '"' + m.group(1)
            end = src.find(close, m.end())
            i = n if end < 0 else end + len(close)
        elif c == '"' or (not glued and c in "bc" and src.startswith('"', i + 1)):
            i = skip_quoted(src, i + (c != '"'))
        elif c == "'" or (not glued and c == "b" and src.startswith("'", i + 1)):
            q = i + (c == "b")
            if src.startswith("\\", q + 1) or src.startswith("'", q + 2):
                i = skip_quoted(src, q)  # a char literal
            else:
                m = IDENT.match(src, q + 1)  # a lifetime or a loop label
                i = m.end() if m else q + 1
        elif m := NUMBER.match(src, i):
            i = m.end()
        elif src.startswith("r#", i) and (m := IDENT.match(src, i + 2)):
            toks.append(Tok(m.group(), line))  # a raw identifier
            i = m.end()
        elif m := IDENT.match(src, i):
            toks.append(Tok(m.group(), line))
            i = m.end()
        elif c == "$" and (m := IDENT.match(src, i + 1)):
            toks.append(Tok("$" + m.group(), line))  # `$crate` in macros
            i = m.end()
        elif src.startswith("::", i):
            toks.append(Tok("::", line))
            i += 2
        else:
            toks.append(Tok(c, line))
            i += 1
        line += src.count("\n", start, i)
    return toks


def skip_quoted(src: str, i: int) -> int:
    """From the opening quote at i to just past the closing one."""
    quote = src[i]
    i += 1
    while i < len(src) and src[i] != quote:
        i += 2 if src[i] == "\\" else 1
    return i + 1


# ---------------------------------------------------------------- reading

Path = tuple[str, ...]  # a module's path from its crate root


@dataclass
class Use:
    """One leaf of a `use` tree (braces expanded), or a path in code."""

    scope: Path  # the module it is written in
    segs: list[str]  # crate, msg, wire, Foo
    line: int
    name: str | None = None  # the name a `use` binds; None for a path in code
    glob: bool = False


@dataclass
class Module:
    path: Path
    file: str
    test: bool
    children: dict[str, Path] = field(default_factory=dict)
    items: set[str] = field(default_factory=set)
    uses: dict[str, Use] = field(default_factory=dict)
    globs: list[Use] = field(default_factory=list)


ITEM_KEYWORDS = {"fn", "struct", "enum", "trait", "type", "const", "static", "union"}
# Items that end at a `;` even after a `{ ... }` (`const X: T = T { .. };`).
ENDS_AT_SEMI = {"use", "static", "const", "type", "let", "extern"}


class Crate:
    """Every module of one crate directory, from each of its roots."""

    def __init__(self, src_dir: str):
        self.src = src_dir
        self.modules: dict[Path, Module] = {}
        self.refs: dict[str, list[Use]] = {}  # each file's uses, test code left out
        self.roots: set[str] = set()

    def load(self) -> None:
        # A binary is a crate of its own: its modules get a path prefix, so
        # that its `crate::` names its own modules and not the library's.
        roots = []
        for name, prefix in (("lib.rs", ()), ("main.rs", ("<main>",))):
            if os.path.isfile(os.path.join(self.src, name)):
                roots.append((os.path.join(self.src, name), prefix))
        bin_dir = os.path.join(self.src, "bin")
        if os.path.isdir(bin_dir):
            for name in sorted(os.listdir(bin_dir)):
                p = os.path.join(bin_dir, name)
                if name.endswith(".rs"):
                    roots.append((p, ("<bin>", name[:-3])))
                elif os.path.isfile(os.path.join(p, "main.rs")):
                    roots.append((os.path.join(p, "main.rs"), ("<bin>", name)))
        for file, prefix in roots:
            self.roots.add(file)
            self.load_file(file, prefix, os.path.dirname(file), test=False)

    def root_of(self, mod: Path) -> Path:
        if mod[:1] == ("<bin>",):
            return mod[:2]
        return mod[:1] if mod[:1] == ("<main>",) else ()

    def load_file(self, file: str, mod: Path, child_dir: str, test: bool) -> None:
        with open(file, encoding="utf-8") as f:
            toks = lex(f.read())
        test = test or os.path.basename(file) == "tests.rs"
        self.modules[mod] = Module(mod, file, test)
        self.refs.setdefault(file, [])
        Parser(self, file, toks, mod, child_dir, test).run()


class Parser:
    """Walks one file's tokens: the modules, items and uses it declares and
    the paths its code names, each in the module it is written in."""

    def __init__(self, crate: Crate, file: str, toks: list[Tok], mod: Path, child_dir: str, test: bool):
        self.crate, self.file, self.toks = crate, file, toks
        self.mod, self.child_dir, self.test = mod, child_dir, test
        # What each open `{` opened: an inline module (its path and where
        # its children's files are), or None for any other block.
        self.blocks: list[tuple[Path, str] | None] = []

    def scope(self) -> tuple[Path, str]:
        for block in reversed(self.blocks):
            if block is not None:
                return block
        return self.mod, self.child_dir

    def tok(self, i: int) -> str:
        return self.toks[i].text if 0 <= i < len(self.toks) else ""

    def run(self) -> None:
        i = 0
        while i < len(self.toks):
            t = self.tok(i)
            if t == "#":
                i, is_test, inner = self.attribute(i)
                if is_test and inner:  # `#![cfg(test)]`: the whole file
                    self.crate.modules[self.mod].test = self.test = True
                elif is_test:
                    i = self.skip_test_item(i)
            elif t == "pub" and self.tok(i + 1) == "(":
                i = self.matching(i + 1) + 1  # `pub(in crate::x)` uses no x
            elif t == "mod" and IDENT.fullmatch(self.tok(i + 1)) and self.tok(i + 2) in (";", "{"):
                i = self.module(i, test=self.test)
            elif t == "use" and self.tok(i + 1) != "<":  # not `impl Trait + use<'a>`
                i = self.use_decl(i + 1)
            elif self.starts_path(i):
                i = self.code_path(i)
            else:
                self.note_item(i)
                if t == "{":
                    self.blocks.append(None)
                elif t == "}" and self.blocks:
                    self.blocks.pop()
                i += 1

    def note_item(self, i: int) -> None:
        if self.blocks and self.blocks[-1] is None:
            return  # inside a function, an impl, a trait: not the module's
        t, name = self.tok(i), self.tok(i + 1)
        if t == "macro_rules" and name == "!":
            name = self.tok(i + 2)
        elif t not in ITEM_KEYWORDS or (t == "const" and name in ("fn", "unsafe", "async")):
            return
        if IDENT.fullmatch(name):
            self.crate.modules[self.scope()[0]].items.add(name)

    def starts_path(self, i: int) -> bool:
        t = self.tok(i)
        return bool(IDENT.fullmatch(t.removeprefix("$"))) and self.tok(i + 1) == "::" and self.tok(i - 1) != "::"

    def matching(self, i: int) -> int:
        """The index of the bracket that closes the one at i."""
        depth = 0
        while i < len(self.toks):
            t = self.tok(i)
            if t in ("(", "[", "{"):
                depth += 1
            elif t in (")", "]", "}"):
                depth -= 1
                if depth == 0:
                    return i
            i += 1
        return i

    def attribute(self, i: int) -> tuple[int, bool, bool]:
        """Past the attribute at i; whether it is `cfg(test)`; whether inner."""
        inner = self.tok(i + 1) == "!"
        start = i + 1 + inner
        if self.tok(start) != "[":
            return i + 1, False, False
        end = self.matching(start)
        body = [t.text for t in self.toks[start + 1 : end]]
        return end + 1, body == ["cfg", "(", "test", ")"], inner

    def skip_test_item(self, i: int) -> int:
        """Past the item a `#[cfg(test)]` stands on; a `mod` there is
        remembered as a test module, so that nothing checks its files."""
        while self.tok(i) == "#":
            i = self.attribute(i)[0]
        if self.tok(i) == "pub":
            i = self.matching(i + 1) + 1 if self.tok(i + 1) == "(" else i + 1
        if self.tok(i) == "mod" and IDENT.fullmatch(self.tok(i + 1)):
            return self.module(i, test=True)
        ends_at_semi = self.tok(i) in ENDS_AT_SEMI
        while i < len(self.toks):
            t = self.tok(i)
            if t == ";":
                return i + 1
            if t in ("(", "[", "{"):
                i = self.matching(i) + 1
                if t == "{" and not ends_at_semi:
                    return i
                continue
            i += 1
        return i

    def module(self, i: int, test: bool) -> int:
        name = self.tok(i + 1)
        parent, parent_dir = self.scope()
        path, child_dir = parent + (name,), os.path.join(parent_dir, name)
        self.crate.modules[parent].children[name] = path
        if self.tok(i + 2) == ";":
            for file in (child_dir + ".rs", os.path.join(child_dir, "mod.rs")):
                if os.path.isfile(file):
                    if test:
                        self.crate.modules[path] = Module(path, file, True)
                    else:
                        self.crate.load_file(file, path, child_dir, test=False)
                    break
            return i + 3
        self.crate.modules[path] = Module(path, self.file, test)
        if test:
            return self.matching(i + 2) + 1
        self.blocks.append((path, child_dir))
        return i + 3

    def use_decl(self, i: int) -> int:
        scope = self.scope()[0]
        leaves: list[Use] = []
        i = self.use_tree(i, [], leaves, scope)
        module = self.crate.modules[scope]
        for leaf in leaves:
            if leaf.glob:
                module.globs.append(leaf)
            elif leaf.name not in (None, "_"):
                module.uses.setdefault(leaf.name, leaf)
            if not self.test:
                self.crate.refs[self.file].append(leaf)
        while i < len(self.toks) and self.tok(i) != ";":
            i += 1
        return i + 1

    def use_tree(self, i: int, prefix: list[str], out: list[Use], scope: Path) -> int:
        """Reads one `use` tree from i into its leaves; returns past it."""
        segs = list(prefix)
        if self.tok(i) == "::":
            segs.append("::")
            i += 1
        while i < len(self.toks):
            t = self.tok(i)
            if t == "*":
                out.append(Use(scope, segs, self.toks[i].line, glob=True))
                return i + 1
            if t == "{":
                i += 1
                while self.tok(i) not in ("}", ""):
                    i = self.use_tree(i, segs, out, scope)
                    if self.tok(i) == ",":
                        i += 1
                return i + 1
            if not IDENT.fullmatch(t.removeprefix("$")):
                return i
            segs = segs + [t]
            line = self.toks[i].line
            i += 1
            if self.tok(i) == "::":
                i += 1
                continue
            name = t if t != "self" else (segs[-2] if len(segs) > 1 else None)
            if self.tok(i) == "as":
                name = self.tok(i + 1)
                i += 2
            out.append(Use(scope, segs, line, name=name))
            return i
        return i

    def code_path(self, i: int) -> int:
        segs, line = [self.tok(i)], self.toks[i].line
        i += 1
        while self.tok(i) == "::" and IDENT.fullmatch(self.tok(i + 1)):
            segs.append(self.tok(i + 1))
            i += 2
        if not self.test:
            self.crate.refs[self.file].append(Use(self.scope()[0], segs, line))
        return i


# ---------------------------------------------------------------- resolving


class Resolver:
    """Follows a path to the module that defines what it names."""

    def __init__(self, crate: Crate):
        self.crate = crate

    def resolve(self, use: Use) -> Path | None:
        """The module defining the item the path names, or the module it
        names; None when the path leads out of the crate."""
        found = self.lookup(use, frozenset())
        return None if found is None else found[0]

    def lookup(self, use: Use, seen: frozenset) -> tuple[Path, bool] | None:
        """(module, whether the path names that module rather than an item
        in it), or None."""
        if id(use) in seen:
            return None
        seen = seen | {id(use)}
        first = use.segs[0]
        if first in ("crate", "$crate"):
            return self.walk(self.crate.root_of(use.scope), use.segs[1:], seen)
        if first in ("self", "super") or self.has(use.scope, first):
            return self.walk(use.scope, use.segs, seen)
        return None  # another crate, the prelude, a local or generic name

    def walk(self, mod: Path, segs: list[str], seen: frozenset) -> tuple[Path, bool] | None:
        root = self.crate.root_of(mod)
        for at, name in enumerate(segs):
            module = self.crate.modules.get(mod)
            if module is None:
                return mod, False
            if name == "self":
                continue
            if name == "super":
                mod = mod[:-1] if len(mod) > len(root) else mod
                continue
            if name in module.children:
                mod = module.children[name]
                continue
            if name in module.items:
                return mod, False
            if name in module.uses:  # an import, or a re-export: follow it
                found = self.lookup(module.uses[name], seen)
                if found is None or not found[1]:
                    return found
                mod = found[0]
                continue
            for glob in module.globs:
                found = self.lookup(glob, seen)
                if found is not None and self.has(found[0], name):
                    return self.walk(found[0], segs[at:], seen)
            return mod, False  # an item a macro makes: taken as defined here
        return mod, True

    def has(self, mod: Path, name: str) -> bool:
        module = self.crate.modules.get(mod)
        return module is not None and (
            name in module.children or name in module.items or name in module.uses
        )


# ---------------------------------------------------------------- checking


@dataclass
class Edge:
    file: str
    line: int
    written: str  # the path as written, braces expanded
    dest: str  # the file that defines what it names
    src_top: str
    dst_top: str


@dataclass
class Graph:
    tops: dict[str, str]  # each checked top-level module, with its file
    edges: list[Edge]


def build(crate_dir: str) -> Graph:
    crate = Crate(os.path.join(crate_dir, "src"))
    crate.load()
    resolver = Resolver(crate)

    def top(mod: Path) -> str | None:
        rest = mod[len(crate.root_of(mod)) :]
        return rest[0] if rest else None

    def exempt(module: Module) -> bool:
        return module.test or top(module.path) == "testing"

    tops: dict[str, str] = {}
    for mod, module in sorted(crate.modules.items()):
        name = top(mod)
        if name is not None and not exempt(module):
            tops.setdefault(name, module.file)

    # A file stands for its outermost module; inline modules are part of it.
    owner: dict[str, Module] = {}
    for module in crate.modules.values():
        held = owner.get(module.file)
        if held is None or len(module.path) < len(held.path):
            owner[module.file] = module

    edges: list[Edge] = []
    for file, uses in sorted(crate.refs.items()):
        if file in crate.roots or exempt(owner[file]):
            continue
        for use in uses:
            target = resolver.resolve(use)
            dest = crate.modules.get(target) if target is not None else None
            if dest is None or dest.file == file or dest.file in crate.roots or exempt(dest):
                continue
            written = "::".join(use.segs) + ("::*" if use.glob else "")
            edges.append(Edge(file, use.line, written, dest.file, top(owner[file].path), top(dest.path)))
    return Graph(tops, edges)


def check(crate_dir: str, layers: list[list[str]]) -> list[str]:
    graph = build(crate_dir)
    problems: list[str] = []
    rank: dict[str, int] = {}
    for i, layer in enumerate(layers):
        for name in layer:
            if name in rank:
                problems.append(f"{crate_dir}: module '{name}' is in two layers")
            rank[name] = i
    for name, file in sorted(graph.tops.items()):
        if name not in rank:
            problems.append(f"{crate_dir}: module '{name}' ({file}) is in no layer; add it to scripts/layers.sh")
    for name in rank:
        if name not in graph.tops:
            problems.append(f"{crate_dir}: a layer names module '{name}', which is not a checked module of the crate")

    for e in graph.edges:
        if e.src_top == e.dst_top or e.src_top not in rank:
            continue
        where = f"{e.file}:{e.line} ({e.src_top}, layer {rank[e.src_top]}) uses {e.written} from {e.dest}"
        if e.dst_top not in rank:
            problems.append(f"{where} ({e.dst_top}), which is in no layer")
        elif rank[e.dst_top] >= rank[e.src_top]:
            problems.append(f"{where} ({e.dst_top}, layer {rank[e.dst_top]}): only lower layers")

    first: dict[str, dict[str, Edge]] = {}
    for e in graph.edges:
        first.setdefault(e.file, {}).setdefault(e.dest, e)
    for circle in cycles({a: set(b) for a, b in first.items()}):
        problems.append(f"import cycle among {len(circle)} files: " + ", ".join(circle))
        for a in circle:
            for b, e in sorted(first[a].items()):
                if b in circle:
                    problems.append(f"  {a}:{e.line} uses {e.written} from {b}")
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one file (Tarjan's)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            at = stack.index(v)
            component, stack[at:] = stack[at:], []
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--graph"] and len(argv) == 2:
        for e in build(argv[1]).edges:
            print(f"{e.file}:{e.line} -> {e.dest} ({e.written})")
        return 0
    if not argv or argv[0].startswith("-"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    problems = check(argv[0], [layer.split() for layer in argv[1:]])
    for p in problems:
        print(f"layers: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
