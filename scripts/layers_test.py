#!/usr/bin/env python3
"""Checks scripts/layers.py itself: a clean fixture crate passes, and each
kind of bad import seeded into a copy of it fails, named.

    python3 scripts/layers_test.py

Prints one line when all is well, so that it reads as a step of
scripts/test.sh and not as one more test runner's summary.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

LAYERS_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "layers.py")
LAYERS = ["low", "mid", "high"]

# Every way of naming another module that the checker must read, each used
# the way the layers allow; and text that only looks like a use.
CLEAN = {
    "src/lib.rs": """\
//! A crate of three layers: low, mid, high. `crate::high` here is a doc.
pub mod high;
pub mod low;
pub mod mid;
#[cfg(test)]
mod testing;

pub use high::Top;
pub use low::Base;
pub use mid::Middle;

pub fn root_helper() {}
""",
    "src/low.rs": """\
pub mod deep;
pub mod leaf;

/* A block comment /* nested */ naming crate::high::Top. */
pub struct Base;

// A line comment naming crate::high::Top.
pub const NOTE: &str = "crate::high::Top";
pub const RAW: &str = r#"use crate::{high::Top}; "quoted" "#;
pub const BRACE: char = '{';
pub const QUOTE: char = '\\'';

pub fn helper<'a>(s: &'a str) -> &'a str {
    crate::root_helper();
    s
}

#[cfg(test)]
mod tests {
    use crate::high::Top;
}
""",
    "src/low/deep.rs": """\
pub mod deeper;

pub struct Deep;
""",
    "src/low/deep/deeper.rs": """\
use super::super::Base;

pub struct Deeper(pub Base);
""",
    "src/low/leaf.rs": """\
//! What no other file uses: where the bad imports are seeded.
use super::Base;

pub fn leaf() -> Base {
    Base
}
""",
    "src/mid.rs": """\
use crate::{
    low::{
        deep::{deeper::Deeper, Deep},
        Base,
    },
    root_helper,
};

mod part;

pub use self::part::Piece;

pub struct Middle(pub Base, pub Deep, pub Deeper);

pub fn make() -> Middle {
    root_helper();
    Middle(Base, Deep, Deeper(crate::low::Base))
}

#[cfg(test)]
#[allow(unused)]
pub fn from_above() -> crate::high::Top {
    crate::high::Top
}
""",
    "src/mid/part.rs": """\
use crate::Base;

pub struct Piece(pub Base);
""",
    "src/high.rs": """\
use crate::mid::{self, Piece};
use crate::Middle;

#[cfg(test)]
mod tests;

pub struct Top;

pub fn build() -> (Middle, Piece) {
    (mid::make(), Piece(crate::low::Base))
}
""",
    "src/high/tests.rs": """\
use crate::high::Top;
""",
    "src/testing.rs": """\
use crate::high::Top;
""",
}


def seeded(path: str, text: str, **more: str) -> dict[str, str]:
    """The clean fixture with `text` added to the end of `path`."""
    files = dict(CLEAN)
    files[path] = files.get(path, "") + text
    files.update(more)
    return files


# Each kind of violation: the files, and a pattern for each problem line the
# checker must print (and no other).
CASES = {
    "a nested-brace import of a higher layer": (
        seeded(
            "src/low/leaf.rs",
            """\
use crate::{
    low::{deep::Deep, Base as B},
    mid::{
        Middle,
    },
};
""",
        ),
        [r"src/low/leaf\.rs:10 \(low, layer 0\) uses crate::mid::Middle from \S+/src/mid\.rs "
         r"\(mid, layer 1\): only lower layers"],
    ),
    "a root re-export of a higher layer": (
        seeded("src/low/leaf.rs", "use crate::Top;\n"),
        [r"src/low/leaf\.rs:7 \(low, layer 0\) uses crate::Top from \S+/src/high\.rs "
         r"\(high, layer 2\): only lower layers"],
    ),
    "a super::super:: import of a higher layer": (
        seeded("src/low/leaf.rs", "pub fn up() -> super::super::high::Top {\n    todo!()\n}\n"),
        [r"src/low/leaf\.rs:7 \(low, layer 0\) uses super::super::high::Top from \S+/src/high\.rs "
         r"\(high, layer 2\): only lower layers"],
    ),
    "a module in no layer": (
        seeded("src/lib.rs", "pub mod extra;\n", **{"src/extra.rs": "pub struct Extra;\n"}),
        [r": module 'extra' \(\S+/src/extra\.rs\) is in no layer"],
    ),
    "a cycle between two files of one layer": (
        seeded("src/mid/part.rs", "\npub fn whole() -> super::Middle {\n    super::make()\n}\n"),
        [r"^import cycle among 2 files: \S+/src/mid\.rs, \S+/src/mid/part\.rs$"],
    ),
}


def run(files: dict[str, str]) -> tuple[int, list[str]]:
    with tempfile.TemporaryDirectory() as crate:
        for path, text in files.items():
            os.makedirs(os.path.dirname(os.path.join(crate, path)), exist_ok=True)
            with open(os.path.join(crate, path), "w", encoding="utf-8") as f:
                f.write(text)
        done = subprocess.run(
            [sys.executable, LAYERS_PY, crate, *LAYERS], capture_output=True, text=True
        )
    # The lines under a cycle list its imports: details, not findings.
    lines = [l.removeprefix("layers: ") for l in done.stderr.splitlines() if not l.startswith("layers:   ")]
    return done.returncode, lines


def main() -> int:
    wrong: list[str] = []
    status, lines = run(CLEAN)
    if status != 0 or lines:
        wrong.append(f"the clean fixture: exit {status}, want 0 and nothing said; said:\n  " + "\n  ".join(lines))
    for kind, (files, patterns) in CASES.items():
        status, lines = run(files)
        missing = [p for p in patterns if not any(re.search(p, l) for l in lines)]
        extra = [l for l in lines if not any(re.search(p, l) for p in patterns)]
        if status != 1 or missing or extra:
            wrong.append(
                f"{kind}: exit {status} (want 1); not named: {missing or 'none'}; "
                f"named beyond it: {extra or 'none'}; all it said:\n  " + "\n  ".join(lines)
            )
    if wrong:
        for w in wrong:
            print(f"layers self-test: wrong on {w}", file=sys.stderr)
        return 1
    print(f"layers self-test: the clean fixture is clean, and each of {len(CASES)} seeded violations is named")
    return 0


if __name__ == "__main__":
    sys.exit(main())
