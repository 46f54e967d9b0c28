#!/usr/bin/env python3
"""Writes man pages for the INS programs from their clap `--help` output.

    manpages.py OUT_DIR BIN_DIR PROGRAM:SECTION...

For each PROGRAM (found in BIN_DIR) runs `PROGRAM --help` and
`PROGRAM --version` (and `PROGRAM SUB --help` for each of its
subcommands) and writes OUT_DIR/manSECTION/PROGRAM.SECTION: NAME and
DESCRIPTION from the program's about text, SYNOPSIS from its usage
line, one section per help block (Arguments, Options, Commands) and one
subsection per subcommand. The text is clap's, kept line for line (no
fill), so the page says exactly what `--help` says. Exits non-zero with
the reason when a program is missing or its help cannot be read.
"""

import os
import re
import subprocess
import sys


def run(argv):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        sys.exit(f"manpages: {' '.join(argv)} exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def esc(line):
    """One line of help text as roff (no fill)."""
    line = line.replace("\\", "\\e").replace("-", "\\-")
    line = "".join(c if ord(c) < 128 else "\\[u%04X]" % ord(c) for c in line)
    if line.startswith((".", "'")):
        line = "\\&" + line
    return line


def split_help(text):
    """(about lines, usage, [(block title, lines)], trailing lines)."""
    lines = text.rstrip("\n").split("\n")
    about, usage, blocks, tail = [], "", [], []
    i = 0
    while i < len(lines) and not lines[i].startswith("Usage:"):
        about.append(lines[i])
        i += 1
    if i < len(lines):
        usage = lines[i][len("Usage:"):].strip()
        i += 1
    cur = None
    for line in lines[i:]:
        m = re.match(r"^([A-Z][A-Za-z ]*):$", line)
        if m:
            cur = (m.group(1), [])
            blocks.append(cur)
        elif cur is not None and (line.startswith(" ") or line == ""):
            cur[1].append(line)
        else:
            cur = None
            tail.append(line)
    while about and about[-1] == "":
        about.pop()
    return about, usage, blocks, tail


def nofill(lines):
    out = [".nf"]
    out += [esc(l) for l in lines]
    out.append(".fi")
    return out


def subcommands(blocks):
    for title, lines in blocks:
        if title == "Commands":
            for l in lines:
                m = re.match(r"^  (\S+)\s", l + " ")
                if m and m.group(1) != "help":
                    yield m.group(1)


def page(bin_dir, prog, section):
    path = os.path.join(bin_dir, prog)
    if not os.access(path, os.X_OK):
        sys.exit(f"manpages: {path} is missing (build it first)")
    version = run([path, "--version"]).strip()
    about, usage, blocks, tail = split_help(run([path, "--help"]))
    summary = next((a for a in about if a.strip()), prog).strip().rstrip(".")
    out = [
        f'.TH "{prog.upper()}" "{section}" "" "{esc(version)}" "INS"',
        ".SH NAME",
        f"{esc(prog)} \\- {esc(summary)}",
        ".SH SYNOPSIS",
        f".B {esc(usage)}" if usage else f".B {esc(prog)}",
        ".SH DESCRIPTION",
    ]
    out += nofill(about)
    for title, lines in blocks:
        out.append(f".SH {title.upper()}")
        out += nofill(lines)
    subs = list(subcommands(blocks))
    if subs:
        out.append('.SH "COMMAND DETAILS"')
        for sub in subs:
            s_about, s_usage, s_blocks, s_tail = split_help(run([path, sub, "--help"]))
            out.append(f'.SS "{esc(prog)} {esc(sub)}"')
            out += nofill(s_about + ["", "Usage: " + s_usage])
            for title, lines in s_blocks:
                out.append(f".PP\n{title}:")
                out += nofill(lines)
            if any(l.strip() for l in s_tail):
                out += nofill(s_tail)
    if any(l.strip() for l in tail):
        out.append(".SH NOTES")
        out += nofill(tail)
    out += [
        '.SH "SEE ALSO"',
        ", ".join(f"\\fB{p}\\fR({s})" for p, s in SEE_ALSO if p != prog),
        ".PP",
        "The README (PREFIX/share/doc/ins/README.md) describes INS as a whole.",
    ]
    d = os.path.join(sys.argv[1], f"man{section}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{prog}.{section}"), "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    SEE_ALSO = [tuple(a.split(":", 1)) for a in sys.argv[3:]]
    for prog, section in SEE_ALSO:
        page(sys.argv[2], prog, section)
