#!/usr/bin/env python3
"""Checks that packaging/pop3gw.8 and `pop3gw --help` say the same thing.

Usage: check-man.py BINARY MANPAGE

Compares the options (-c, --check-config, --health, ...) and every
configuration key with its default. Prints what differs and exits 1, or
prints a one-line summary and exits 0.
"""
import re
import subprocess
import sys


def roff_text(s):
    """Roff line to plain text: font escapes, \\- and friends removed."""
    s = re.sub(r"\\f[BIRP]", "", s)
    s = s.replace("\\-", "-").replace("\\(em", "-").replace("\\&", "").replace("\\e", "\\")
    return s.strip()


def from_help(binary):
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
    options, keys = set(), {}
    in_keys = False
    for line in out.splitlines():
        if line.startswith("keys"):
            in_keys = True
            continue
        if not in_keys:
            # "  -c FILE, --config=FILE      read keys from FILE"
            m = re.match(r"^  (-\S.*?)\s{2,}", line)
            if m:
                for opt in re.findall(r"(--?[a-zA-Z][a-z-]*)", m.group(1)):
                    options.add(opt)
            continue
        m = re.match(r"^  (\S+)\s+.*\(default: (.*)\)$", line)
        if m:
            keys[m.group(1)] = m.group(2)
    return options, keys


def from_man(path):
    lines = open(path, encoding="utf-8").read().splitlines()
    section, options, keys = None, set(), {}
    key = None
    for i, line in enumerate(lines):
        if line.startswith(".SH "):
            section = roff_text(line[4:]).strip('"')
            key = None
            continue
        if section == "OPTIONS" and i > 0 and lines[i - 1] == ".TP":
            for opt in re.findall(r"(--?[a-zA-Z][a-z-]*)", roff_text(line)):
                if opt not in ("--KEY", "-KEY"):
                    options.add(opt)
        if section == "KEYS":
            if i > 0 and lines[i - 1] == ".TP":
                m = re.match(r"^\.B (\S+)$", line) or re.match(r"^\.BI (\S+) EVENT$", line)
                key = (m.group(1) + ("EVENT" if line.startswith(".BI") else "")) if m else None
                if key:
                    keys[key] = None
            elif key and line.startswith("Default: "):
                keys[key] = roff_text(line[len("Default: "):]).rstrip(".")
    return options, keys


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    h_opts, h_keys = from_help(sys.argv[1])
    m_opts, m_keys = from_man(sys.argv[2])
    problems = []
    for o in sorted(h_opts - m_opts):
        problems.append(f"option {o}: in --help, not in the man page's OPTIONS")
    for o in sorted(m_opts - h_opts):
        problems.append(f"option {o}: in the man page's OPTIONS, not in --help")
    for k in h_keys:
        if k not in m_keys:
            problems.append(f"key {k}: in --help, not in the man page's KEYS")
        elif m_keys[k] is None:
            problems.append(f"key {k}: no 'Default:' line in the man page")
        elif m_keys[k] != h_keys[k]:
            problems.append(f"key {k}: default '{h_keys[k]}' in --help, '{m_keys[k]}' in the man page")
    for k in m_keys:
        if k not in h_keys:
            problems.append(f"key {k}: in the man page, not in --help")
    if list(h_keys) != [k for k in m_keys if k in h_keys]:
        problems.append("the man page lists the keys in another order than --help")
    if problems:
        for p in problems:
            print("check-man: " + p, file=sys.stderr)
        return 1
    print(f"check-man: {len(h_keys)} keys and {len(h_opts)} options agree between --help and {sys.argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
