#!/usr/bin/env python3
"""Checks ARCHITECTURE.md against the tree under src/, so the map and the code cannot drift
apart unnoticed:

1. Every file and folder the module list (the code block of "## Modules") names exists, and
   every Rust source file under src/ (but unit tests: tests.rs and tests/) is named there.
2. The imports between modules: the crate's top-level modules (`src/<name>.rs` or
   `src/<name>/`, and `main` for src/main.rs) and, inside each folder module, its
   sub-modules (`protocol/ascii`, `protocol/meta`, ...). An edge a -> b is any path into b
   in a's code: `use crate::b::...`, `crate::b::` anywhere, `super::`/`self::` paths that
   reach b, and `memcrab::b` in src/main.rs. Comments, doc comments, string literals,
   `#[cfg(test)]` items and tests.rs files are left out (unit tests may reach anywhere).
   A folder's mod.rs is the folder itself: its imports of its own children are not edges.
   - Every top-level edge must be declared in ARCHITECTURE.md's dependency list, one line
     per top-level module:
         - `server` -> `command`, `metrics`, `protocol`
         - `number` -> nothing
     Declared edges the code does not use are reported as warnings.
   - No cycle, among the top-level modules or among the sub-modules of one folder, except
     a pair listed in the same section as a known cycle:
         - `command` <-> `config`: why it is there
     (a cycle through any third module still fails; a listed pair that no longer forms a
     cycle is reported as a warning).

Exit status 1 with the differences, 0 when they agree (warnings do not fail).
`--self-test` runs the script's own tests of its parsers and exits.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATE = "memcrab"  # how src/main.rs names the library crate

# ---------------------------------------------------------------------------------------
# 1. The module list.


def modules_section(text):
    """The "## Modules" section of ARCHITECTURE.md: (its code block, the text after it)."""
    section = text.split("\n## Modules", 1)[1]
    section = re.split(r"\n## ", section, maxsplit=1)[0]
    _, block, rest = section.split("```", 2)
    return block, rest


def listed(block):
    # Names sit at two spaces of indent per folder level; descriptions (and their
    # continuation lines) start further right.
    paths, folders = [], []
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        name = line.split()[0]
        if indent % 2 or indent // 2 > len(folders):
            continue  # a continuation line of a description
        if not re.fullmatch(r"[\w./-]+", name) or ("/" not in name and "." not in name):
            continue
        del folders[indent // 2 :]
        paths.append("".join(folders) + name)
        if name.endswith("/"):
            folders.append(name)
    return paths


def check_module_list(block, root):
    errors = []
    paths = listed(block)
    missing = [p for p in paths if not (root / p).exists()]
    named = {p for p in paths if p.endswith(".rs")}
    unnamed = [
        f.relative_to(root).as_posix()
        for f in sorted((root / "src").rglob("*.rs"))
        if "tests" not in (f.stem, f.parent.name) and f.relative_to(root).as_posix() not in named
    ]
    for p in missing:
        errors.append(f"ARCHITECTURE.md names {p}, which does not exist")
    for p in unnamed:
        errors.append(f"{p} is not in ARCHITECTURE.md's module list")
    return errors


# ---------------------------------------------------------------------------------------
# 2. The declared dependencies.

EDGE_LINE = re.compile(r"- `(\w+)` -> (nothing|`\w+`(?:, `\w+`)*)")
CYCLE_LINE = re.compile(r"- `([\w/]+)` <-> `([\w/]+)`(?:[:;,( ].*)?")


def parse_declared(rest):
    """The dependency list after the module list: ({module: set of modules it may import},
    [known cycle pairs], [errors]). Every line of the section that starts with "- `" must
    be an edge line or a known-cycle line."""
    declared, cycles, errors = {}, [], []
    for line in rest.splitlines():
        if not line.startswith("- `"):
            continue
        line = line.rstrip()
        m = EDGE_LINE.fullmatch(line)
        if m:
            name, targets = m.group(1), m.group(2)
            if name in declared:
                errors.append(f"ARCHITECTURE.md: `{name}` has two dependency lines")
            declared[name] = set() if targets == "nothing" else set(re.findall(r"`(\w+)`", targets))
            continue
        m = CYCLE_LINE.fullmatch(line)
        if m:
            cycles.append(tuple(sorted((m.group(1), m.group(2)))))
            continue
        errors.append(
            f"ARCHITECTURE.md: cannot read the dependency line {line!r}; the forms are "
            "\"- `a` -> `b`, `c`\", \"- `a` -> nothing\" and \"- `a` <-> `b`: why\""
        )
    return declared, cycles, errors


# ---------------------------------------------------------------------------------------
# Reading Rust sources: only code, and the paths in it.

RAW_STRING = re.compile(r'[bc]?r(#*)"')
CHAR_LITERAL = re.compile(r"'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F_]+\}|.)|[^\\'\n])'")
IDENT = re.compile(r"[A-Za-z_0-9]+")


def code_only(src):
    """`src` with comments (doc comments too), string and char literals blanked: same
    length, same line breaks."""
    out = list(src)
    n = len(src)

    def blank(a, b):
        for k in range(a, min(b, n)):
            if out[k] != "\n":
                out[k] = " "

    i = 0
    while i < n:
        c = src[i]
        if c == "/" and src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif c == "/" and src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            blank(i + 1, j)
            i = j + 1
        elif c == "'":
            m = CHAR_LITERAL.match(src, i)
            if m:  # else a lifetime or a label
                blank(i, m.end())
                i = m.end()
            else:
                i += 1
        elif c.isalnum() or c == "_":
            m = RAW_STRING.match(src, i)
            if m:
                end = src.find('"' + m.group(1), m.end())
                end = n if end < 0 else end
                blank(m.end(), end)
                i = end + 1 + len(m.group(1))
            else:
                i = IDENT.match(src, i).end()
        else:
            i += 1
    return "".join(out)


def matching(code, i, open_="{", close="}"):
    """The index just past the bracket that closes the one at `i`."""
    depth = 0
    for j in range(i, len(code)):
        if code[j] == open_:
            depth += 1
        elif code[j] == close:
            depth -= 1
            if depth == 0:
                return j + 1
    return len(code)


def drop_test_items(code):
    """`code` with every `#[cfg(test)]` item blanked; and the names of the `mod x;` among
    them (their files are test code too)."""
    test_mods = []
    while True:
        m = re.search(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]", code)
        if not m:
            return code, test_mods
        i = m.end()
        # further attributes of the same item
        while True:
            a = re.compile(r"\s*#\s*\[").match(code, i)
            if not a:
                break
            i = matching(code, a.end() - 1, "[", "]")
        end = i
        depth = 0
        while end < len(code):
            ch = code[end]
            if ch in "([":
                depth += 1
            elif ch in ")]":
                depth -= 1
            elif depth == 0 and ch == ";":
                end += 1
                break
            elif depth == 0 and ch == "{":
                end = matching(code, end)
                break
            end += 1
        out_of_line = re.fullmatch(r"\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", code[i:end])
        if out_of_line:
            test_mods.append(out_of_line.group(1))
        code = code[: m.start()] + re.sub(r"[^\n]", " ", code[m.start() : end]) + code[end:]


def inline_modules(code):
    """[(start, end, name)] of the `mod name { ... }` blocks in `code`."""
    return [
        (m.start(), matching(code, m.end() - 1), m.group(1))
        for m in re.finditer(r"\bmod\s+(\w+)\s*\{", code)
    ]


def use_tree(code, i):
    """The paths of the use tree (or plain path) starting at `code[i]`, as segment lists:
    `a::{b, c::{d, e}}` gives [a, b], [a, c, d], [a, c, e]."""
    segs = []
    while True:
        while i < len(code) and code[i].isspace():
            i += 1
        if i < len(code) and code[i] == "{":
            paths, i = [], i + 1
            while i < len(code):
                while i < len(code) and code[i] in " \t\n,":
                    i += 1
                if i >= len(code) or code[i] == "}":
                    break
                sub, j = use_tree(code, i)
                if j == i:  # not a path: give up on this group
                    break
                paths += [segs + s for s in sub]
                i = j
            return paths or [segs], i + 1
        m = re.compile(r"[A-Za-z_]\w*").match(code, i)
        if not m:
            return [segs], i
        segs.append(m.group())
        i = m.end()
        sep = re.compile(r"\s*::\s*").match(code, i)
        if not sep:
            if re.compile(r"\s+as\s+\w+").match(code, i):
                i = re.compile(r"\s+as\s+\w+").match(code, i).end()
            return [segs], i
        i = sep.end()


ANCHOR = re.compile(r"(?<![\w:])(crate|super|self|" + CRATE + r")\s*::")


def paths_in(code, module, binary=False):
    """[(offset, absolute module path as a tuple)] of every crate path in `code`, the code of
    the file of `module` (a tuple such as ("protocol", "meta")). In a binary, crate paths are
    spelt with the library's name."""
    inline = inline_modules(code)
    found = []
    for m in ANCHOR.finditer(code):
        anchor = m.group(1)
        if (anchor == CRATE) != binary and anchor in ("crate", CRATE):
            continue
        here = list(module) + [name for start, end, name in inline if start < m.start() < end]
        for segs in use_tree(code, m.end())[0]:
            if anchor in ("crate", CRATE):
                base = []
            elif anchor == "self":
                base = list(here)
            else:
                base = here[:-1]
            while segs and segs[0] == "super":
                base, segs = base[:-1], segs[1:]
            segs = [s for s in segs if s != "self"]
            found.append((m.start(), tuple(base + segs)))
    return found


# ---------------------------------------------------------------------------------------
# The graph.


def source_files(root):
    """{module path: file} of the crate's sources: src/x.rs and src/x/mod.rs are ("x",),
    src/x/y.rs is ("x", "y"); src/main.rs is ("main",), src/lib.rs is the root ()."""
    files = {}
    for f in sorted((root / "src").rglob("*.rs")):
        parts = list(f.relative_to(root / "src").with_suffix("").parts)
        if parts[-1] == "mod":
            parts.pop()
        if parts == ["lib"]:
            parts = []
        files[tuple(parts)] = f
    return files


def known_prefix(path, modules):
    """The longest prefix of `path` that is a module with a file."""
    for k in range(len(path), -1, -1):
        if path[:k] in modules:
            return path[:k]
    return ()


def edges_of(root):
    """{(from, to): [(file, line number, line)]}: the edges between sibling modules (the
    top-level ones, and the children of each folder), named `a` or `folder/a`."""
    files = source_files(root)
    modules = set(files)
    skipped = set()
    edges = {}
    for module, f in sorted(files.items()):
        if f.name == "tests.rs" or module in skipped or module == ():
            continue
        src = f.read_text()
        code, test_mods = drop_test_items(code_only(src))
        for name in test_mods:  # files of test-only modules
            skipped.add(module + (name,))
        lines = src.splitlines()
        for offset, target in paths_in(code, module, binary=module == ("main",)):
            target = known_prefix(target, modules)
            k = 0
            while k < min(len(module), len(target)) and module[k] == target[k]:
                k += 1
            if k == len(module) or k == len(target):
                continue  # within one module, or between a module and its own ancestor
            edge = ("/".join(module[: k + 1]), "/".join(target[: k + 1]))
            line_no = code.count("\n", 0, offset) + 1
            witness = (f.relative_to(root).as_posix(), line_no, lines[line_no - 1].strip())
            if witness not in edges.setdefault(edge, []):
                edges[edge].append(witness)
    return edges, {m[0] for m in modules if m}


def strongly_connected(nodes, edges):
    """Tarjan's components of more than one node, each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []
    succ = {n: sorted(b for a, b in edges if a == n) for n in nodes}

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in succ.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def where(witnesses):
    shown = [f"    {f}:{n}: {line}" for f, n, line in witnesses[:3]]
    if len(witnesses) > 3:
        shown.append(f"    ... and {len(witnesses) - 3} more")
    return "\n".join(shown)


def check_dependencies(rest, root):
    """(errors, warnings) of the declared dependencies against the code's."""
    errors, warnings = [], []
    declared, known_cycles, errors = parse_declared(rest)
    edges, top = edges_of(root)
    if not declared:
        return errors + [
            "ARCHITECTURE.md declares no dependencies: after the module list, one line per "
            "top-level module, \"- `a` -> `b`, `c`\" or \"- `a` -> nothing\""
        ], warnings
    for name in sorted(top - set(declared)):
        errors.append(
            f"ARCHITECTURE.md has no dependency line for the module `{name}` "
            f"(\"- `{name}` -> ...\", or \"- `{name}` -> nothing\")"
        )
    for name in sorted(set(declared) - top):
        errors.append(f"ARCHITECTURE.md declares dependencies of `{name}`, which is not a module")
    for name, targets in sorted(declared.items()):
        for t in sorted(targets - top):
            errors.append(f"ARCHITECTURE.md: `{name}` -> `{t}`: `{t}` is not a module")
    for (a, b), witnesses in sorted(edges.items()):
        if "/" not in a and b not in declared.get(a, {b}):
            errors.append(
                f"`{a}` imports `{b}`, which ARCHITECTURE.md does not declare "
                f"(add `{b}` to the line \"- `{a}` -> ...\" or drop the import):\n"
                + where(witnesses)
            )
    for a, targets in sorted(declared.items()):
        for b in sorted(targets):
            if (a, b) not in edges and a in top and b in top:
                warnings.append(f"ARCHITECTURE.md declares `{a}` -> `{b}`, which the code does not use")

    # Cycles: among the top-level modules, and among the children of each folder.
    groups = {}
    for a, b in edges:
        groups.setdefault(a.rpartition("/")[0], set()).update((a, b))
    for parent, nodes in sorted(groups.items()):
        group_edges = {e for e in edges if e[0] in nodes}
        for comp in strongly_connected(nodes, group_edges):
            inside = sorted(e for e in group_edges if e[0] in comp and e[1] in comp)
            shown = "\n".join(f"  `{a}` -> `{b}`:\n{where(edges[(a, b)])}" for a, b in inside)
            if len(comp) == 2 and tuple(comp) in known_cycles:
                warnings.append(f"known cycle `{comp[0]}` <-> `{comp[1]}` (to be broken):\n{shown}")
                continue
            names = ", ".join(f"`{n}`" for n in comp)
            errors.append(f"a cycle among {names}:\n{shown}")
    for a, b in known_cycles:
        if (a, b) not in edges or (b, a) not in edges:
            warnings.append(
                f"ARCHITECTURE.md lists `{a}` <-> `{b}` as a known cycle, which it no longer "
                "is: remove the line"
            )
    return errors, warnings


# ---------------------------------------------------------------------------------------


def self_test():
    import tempfile

    src = 'a // crate::x\nb "crate::y" /* crate::z /* n */ */ c'
    assert code_only(src).split() == ["a", "b", '"', '"', "c"] and len(code_only(src)) == len(src)
    assert "crate" not in code_only("/// [`crate::x`]\n//! crate::y\nlet c = '\"'; crate")[:-5]
    assert code_only("r#\"crate::x\"# 'a' '\\'' fn f<'a>(x: &'a u8)").split() == [
        "r#\"", "\"#", "fn", "f<'a>(x:", "&'a", "u8)"
    ]
    code, mods = drop_test_items(
        "use crate::a;\n#[cfg(test)]\n#[allow(x)]\nmod tests {\n use crate::b; }\n"
        "#[cfg(test)] mod more;\n#[cfg(test)] use crate::c;\nfn d() { crate::d::f() }"
    )
    assert "crate::b" not in code and "crate::c" not in code and "more" not in code
    assert "crate::a" in code and "crate::d" in code and mods == ["more"], (code, mods)
    assert code.count("\n") == 7
    assert use_tree("a::{b, c::{d, e as f}, self}; x", 0)[0] == [
        ["a", "b"], ["a", "c", "d"], ["a", "c", "e"], ["a", "self"]
    ]
    assert use_tree("a::b(1)", 0)[0] == [["a", "b"]]
    assert use_tree("a::B::<T>::new()", 0)[0] == [["a", "B"]]
    code = "use super::meta::x;\nmod inner { use super::y; }\nfn f() { super::super::z::g(); }"
    assert [p for _, p in paths_in(code, ("p", "ascii"))] == [
        ("p", "meta", "x"), ("p", "ascii", "y"), ("z", "g")
    ]
    assert [p for _, p in paths_in("use memcrab::{a, b::C}; crate::x", ("main",), True)] == [
        ("a",), ("b", "C")
    ]
    declared, cycles, errors = parse_declared(
        "text\n- `a` -> `b`, `c`\n- `b` -> nothing\n- `a` <-> `b`: for now\n- `c` => `a`\n"
    )
    assert declared == {"a": {"b", "c"}, "b": set()} and cycles == [("a", "b")], declared
    assert len(errors) == 1 and "`c` => `a`" in errors[0]
    assert strongly_connected({"a", "b", "c", "d"}, {("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [
        ["a", "b", "c"]
    ]

    # A tree: a -> b declared, b -> a undeclared (and a cycle), c/x <-> c/y a known cycle.
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        for name, text in {
            "lib.rs": "pub mod a; pub mod b; pub mod c;",
            "a.rs": "use crate::b::f;",
            "b.rs": "fn g() { crate::a::h() }\n#[cfg(test)] mod t { use crate::c::X; }",
            "c/mod.rs": "mod x; mod y; pub use x::X;",
            "c/x.rs": "use super::y::Y;",
            "c/y.rs": "use crate::c::x::X;",
        }.items():
            (root / "src" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "src" / name).write_text(text)
        rest = "- `a` -> `b`\n- `b` -> nothing\n- `c` -> `a`\n- `c/x` <-> `c/y`: for now\n"
        errors, warnings = check_dependencies(rest, root)
        assert len(errors) == 2, errors
        assert errors[0].startswith("`b` imports `a`") and "src/b.rs:1:" in errors[0]
        assert errors[1].startswith("a cycle among `a`, `b`")
        assert any("`c` -> `a`, which the code does not use" in w for w in warnings), warnings
        assert any(w.startswith("known cycle `c/x` <-> `c/y`") for w in warnings), warnings
    print("check-architecture.py: self-test passed")


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        return
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block, rest = modules_section(text)
    errors = check_module_list(block, ROOT)
    dep_errors, warnings = check_dependencies(rest, ROOT)
    errors += dep_errors
    for w in warnings:
        print(f"warning: {w}")
    for e in errors:
        print(f"error: {e}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
