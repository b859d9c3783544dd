#!/usr/bin/env python3
"""Rewrites a CUDA source (.cu) into C++ for the emulated device (emu/).

Two mechanical changes, nothing else, so the kernels run unchanged:
  * `kernel<<<grid, block[, smem[, stream]]>>>(args)` becomes
    `::emu::launch(kernel, SITE, grid, block[, smem[, stream]])(args)`, SITE
    naming the kernel, file and line for diagnostics (a template kernel
    launched by its bare name: `::emu::launch_deduced(CALL, SITE, ...)`,
    CALL a generic lambda calling it, so its arguments deduce the template's);
  * `__shared__ T name[N]...;` becomes a reference to the block's shared
    storage of that declaration (`::emu::shared_var<T[N]..., ID>("name")`),
    and `extern __shared__ T name[];` a pointer to the dynamic shared memory
    (a `static` before `__shared__` is dropped: the storage is the block's anyway).
Every line keeps its number (replacements never add or remove newlines) and
a #line directive names the original file, so compiler messages and
__FILE__/__LINE__ point at the .cu. Inline PTX is left alone.

  rewrite.py INPUT.cu OUTPUT.cpp
"""
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


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    path, dest = sys.argv[1], sys.argv[2]
    with open(path, encoding='utf-8') as f:
        src = f.read()
    src = rewrite_shared(src, mask_comments_and_strings(src), path)
    src = rewrite_launches(src, mask_comments_and_strings(src), path)
    with open(dest, 'w', encoding='utf-8') as f:
        f.write('#include "emu/kernel.h"\n#line 1 "%s"\n' % path)
        f.write(src)


if __name__ == '__main__':
    main()
