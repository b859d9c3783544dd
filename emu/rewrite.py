#!/usr/bin/env python3
"""Rewrites a CUDA source (.cu) into C++ for the emulated device (emu/).

Three mechanical changes, nothing else, so the kernels run unchanged:
  * `kernel<<<grid, block[, smem[, stream]]>>>(args)` becomes
    `::emu::launch(kernel, SITE, grid, block[, smem[, stream]])(args)`, SITE
    naming the kernel, file and line for diagnostics (a template kernel
    launched by its bare name: `::emu::launch_deduced(CALL, SITE, ...)`,
    CALL a generic lambda calling it, so its arguments deduce the template's);
  * `__shared__ T name[N]...;` becomes a reference to the block's shared
    storage of that declaration (`::emu::shared_var<T[N]..., ID>("name")`),
    and `extern __shared__ T name[];` a pointer to the dynamic shared memory
    (a `static` before `__shared__` is dropped: the storage is the block's anyway).
  * GNU inline asm, `asm [volatile] ("template" : outputs : inputs : clobbers)`,
    becomes a call of the PTX emulation (emu/include/emu/ptx.h):
    `::emu::ptx::exec(SITE, "template", OPERANDS...)`, the template's string
    literals kept as written and each operand wrapped by its constraint, in
    the numbering %0, %1, ... of the asm (outputs first, then inputs):
      "=r"(x) -> ::emu::ptx::out<'r'>(x)     (an lvalue the result goes to)
      "+f"(x) -> ::emu::ptx::inout<'f'>(x)   (read, then written)
      "l"(e)  -> ::emu::ptx::in<'l'>(e)      (a value)
      "n"(e)  -> ::emu::ptx::imm<(e)>()      (a constant expression)
    with the letters r (32-bit), l (64-bit), h (16-bit), f (float) and d
    (double); '&' (early clobber) is dropped, clobbers ("memory", "cc") and
    `volatile` mean nothing to the emulator. Anything else (named operands,
    `asm goto`, a matching-digit constraint, a template that is not string
    literals) is refused with a message naming the line.
Every line keeps its number (replacements never add or remove newlines,
and an asm operand stays on its line) and a #line directive names the
original file, so compiler messages and __FILE__/__LINE__ point at the .cu.

  rewrite.py INPUT.cu OUTPUT.cpp   (OUTPUT's directory is made if missing)
"""
import os
import re
import sys
import zlib

TEMPLATE_KERNEL = re.compile(
    r'template\s*<[^;{]*?>\s*__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(')
SHARED = re.compile(
    r'(?P<static>\bstatic\s+)?(?P<extern>\bextern\s+)?\b__shared__\s+(?P<align>__align__\s*\(\s*\d+\s*\)\s+)?'
    r'(?P<type>[A-Za-z_][\w:<>,\s\*]*?)\s+(?P<name>[A-Za-z_]\w*)\s*(?P<dims>(\[[^\]]*\]\s*)*);')


def mask_comments_and_strings(src):
    """The source with comments and string/char literals blanked (same length),
    so the patterns below never match inside them."""
    out = list(src)
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith('//', i):
            j = src.find('\n', i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = ' '
            i = j
        elif src.startswith('/*', i):
            j = src.find('*/', i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                if src[k] != '\n':
                    out[k] = ' '
            i = j
        elif c in '"\'':
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == '\\' else 1
            for k in range(i + 1, min(j, n)):
                if src[k] != '\n':
                    out[k] = ' '
            i = j + 1
        else:
            i += 1
    return ''.join(out)


def callee_start(masked, end):
    """Start of the postfix expression (identifiers, ::, template arguments)
    that ends at `end` (exclusive), scanning back over whitespace first."""
    i = end
    while i > 0 and masked[i - 1].isspace():
        i -= 1
    while i > 0:
        c = masked[i - 1]
        if c.isalnum() or c == '_' or c == ':':
            i -= 1
        elif c == '>':
            depth = 0
            while i > 0:
                i -= 1
                if masked[i] == '>':
                    depth += 1
                elif masked[i] == '<':
                    depth -= 1
                    if depth == 0:
                        break
        elif c.isspace():
            j = i
            while j > 0 and masked[j - 1].isspace():
                j -= 1
            if j > 0 and (masked[j - 1] == ':' or masked[j - 1] == '>'):
                i = j
            else:
                break
        else:
            break
    return i


def rewrite_launches(src, masked, path):
    # A template kernel launched by its bare name has its template arguments
    # deduced from the call's arguments, as a C++ call would: that needs a
    # call, not a function pointer.
    deduced = set(TEMPLATE_KERNEL.findall(masked))
    out, pos = [], 0
    for m in re.finditer(r'<<<', masked):
        start = callee_start(masked, m.start())
        close = masked.find('>>>', m.end())
        if close < 0:
            raise SystemExit(f'{path}: <<< without >>>')
        callee = ' '.join(src[start:m.start()].split())
        line = src.count('\n', 0, m.start()) + 1
        site = '::emu::Site{"%s", __FILE__, %d}' % (callee.replace('"', ''), line)
        out.append(src[pos:start])
        if callee in deduced:
            call = '[](auto&&... a) { %s(static_cast<decltype(a)&&>(a)...); }' % callee
            out.append('::emu::launch_deduced(' + call + ', ' + site + ', ')
        else:
            out.append('::emu::launch(' + src[start:m.start()] + ', ' + site + ', ')
        out.append(src[m.end():close])
        out.append(')')
        pos = close + 3
    out.append(src[pos:])
    return ''.join(out)


def rewrite_shared(src, masked, path):
    out, pos = [], 0
    for m in SHARED.finditer(masked):
        name, ctype = m.group('name'), ' '.join(m.group('type').split())
        dims = ''.join(m.group('dims').split())
        text = src[m.start():m.end()]
        newlines = '\n' * text.count('\n')
        if m.group('extern'):
            if dims != '[]':
                raise SystemExit(f'{path}: extern __shared__ {name} must be an unsized array')
            repl = f'{ctype}* {name} = ::emu::shared_dynamic<{ctype}>();'
        else:
            ident = zlib.crc32(f'{path}:{m.start()}'.encode()) & 0x7fffffff
            stored, member = f'{ctype}{dims}', ''
            if m.group('align'):
                n = re.search(r'\d+', m.group('align')).group(0)
                stored, member = f'::emu::Aligned<{ctype}{dims}, {n}>', '.value'
            repl = f'auto& {name} = ::emu::shared_var<{stored}, {ident}>("{name}"){member};'
        out.append(src[pos:m.start()])
        out.append(repl + newlines)
        pos = m.end()
    out.append(src[pos:])
    return ''.join(out)


ASM = re.compile(r'\b(?:asm|__asm__|__asm)\b(?P<quals>(?:\s+(?:volatile|__volatile__|inline|__inline__|goto))*)\s*\(')
CONSTRAINT = re.compile(r'^(?P<mods>[=+&]*)(?P<letter>[rlhfdn])$')
OPENERS, CLOSERS = '([{', ')]}'


def closing(masked, i, path):
    """Index of the bracket closing the one at masked[i]."""
    depth = 0
    for j in range(i, len(masked)):
        c = masked[j]
        if c in OPENERS:
            depth += 1
        elif c in CLOSERS:
            depth -= 1
            if depth == 0:
                return j
    raise SystemExit(f'{path}: unbalanced brackets from offset {i}')


def split_top(masked, start, end, sep):
    """[start, end) cut at each `sep` outside brackets: a list of (start, end)."""
    parts, depth, begin = [], 0, start
    for j in range(start, end):
        c = masked[j]
        if c in OPENERS:
            depth += 1
        elif c in CLOSERS:
            depth -= 1
        elif c == sep and depth == 0:
            parts.append((begin, j))
            begin = j + 1
    parts.append((begin, end))
    return parts


def newlines(text):
    return '\n' * text.count('\n')


def rewrite_asm(src, masked, path):
    out, pos = [], 0
    for m in ASM.finditer(masked):
        if m.start() < pos:
            continue
        line = src.count('\n', 0, m.start()) + 1
        where = f'{path}:{line}'
        if 'goto' in m.group('quals').split():
            raise SystemExit(f'{where}: asm goto is not emulated')
        open_paren = m.end() - 1
        close = closing(masked, open_paren, path)
        sections = split_top(masked, open_paren + 1, close, ':')
        if len(sections) > 4:
            raise SystemExit(f'{where}: asm goto labels are not emulated')
        t0, t1 = sections[0]
        if not re.fullmatch(r'\s*("[^"\n]*"\s*)+', masked[t0:t1]):
            raise SystemExit(f'{where}: the asm template must be string literals')
        lead = len(src[t0:t1]) - len(src[t0:t1].lstrip())
        trail = len(src[t0:t1].rstrip())
        pieces = ['::emu::ptx::exec(::emu::Site{"asm", __FILE__, %d}, ' % line,
                  newlines(src[t0:t0 + lead]), src[t0 + lead:t0 + trail], newlines(src[t0 + trail:t1])]
        for index, (s0, s1) in enumerate(sections[1:3]):
            output = index == 0
            if not masked[s0:s1].strip():
                pieces.append(newlines(src[s0:s1]))
                continue
            for o0, o1 in split_top(masked, s0, s1, ','):
                om = re.match(r'\s*(\[)?', masked[o0:o1])
                if om.group(1):
                    raise SystemExit(f'{where}: named asm operands ([name]) are not emulated')
                cm = re.match(r'\s*"([^"]*)"\s*\(', masked[o0:o1])
                if not cm:
                    raise SystemExit(f'{where}: cannot read the asm operand "{src[o0:o1].strip()}"')
                q0 = o0 + cm.start(1)
                constraint = src[q0:q0 + len(cm.group(1))]
                p_open = o0 + cm.end() - 1
                p_close = closing(masked, p_open, path)
                if masked[p_close + 1:o1].strip():
                    raise SystemExit(f'{where}: cannot read the asm operand "{src[o0:o1].strip()}"')
                c = CONSTRAINT.match(constraint)
                if not c:
                    raise SystemExit(f'{where}: asm constraint "{constraint}" is not emulated '
                                     '(r, l, h, f, d, n with = or +)')
                mods, letter = c.group('mods'), c.group('letter')
                writes = '=' in mods or '+' in mods
                if output != writes or ('=' in mods and '+' in mods) or ('&' in mods and '=' not in mods):
                    raise SystemExit(f'{where}: asm constraint "{constraint}" in the '
                                     f'{"outputs" if output else "inputs"}')
                if letter == 'n' and output:
                    raise SystemExit(f'{where}: an immediate ("n") cannot be an output')
                expr = src[p_open + 1:p_close]
                pieces.append(',' + newlines(src[o0:p_open]) + ' ')
                if letter == 'n':
                    pieces.append(f'::emu::ptx::imm<({expr})>()')
                else:
                    wrap = 'inout' if '+' in mods else 'out' if output else 'in'
                    pieces.append(f"::emu::ptx::{wrap}<'{letter}'>({expr})")
                pieces.append(newlines(src[p_close:o1]))
        for s0, s1 in sections[3:]:
            pieces.append(newlines(src[s0:s1]))  # clobbers: nothing to emulate
        pieces.append(')')
        out.append(src[pos:m.start()])
        out.append(newlines(src[m.start():open_paren]))
        out.append(''.join(pieces))
        pos = close + 1
    out.append(src[pos:])
    return ''.join(out)


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    path, dest = sys.argv[1], sys.argv[2]
    with open(path, encoding='utf-8') as f:
        src = f.read()
    src = rewrite_asm(src, mask_comments_and_strings(src), path)
    src = rewrite_shared(src, mask_comments_and_strings(src), path)
    src = rewrite_launches(src, mask_comments_and_strings(src), path)
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    with open(dest, 'w', encoding='utf-8') as f:
        f.write('#include "emu/kernel.h"\n#line 1 "%s"\n' % path)
        f.write(src)


if __name__ == '__main__':
    main()
