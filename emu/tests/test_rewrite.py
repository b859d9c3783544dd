#!/usr/bin/env python3
"""emu/rewrite.py on snippets (ctest emu_rewrite, label cpu): launches,
__shared__ declarations and inline asm are rewritten as documented, every
line keeps its number, and what the rewriter cannot emulate is refused with
the file and line. Also every kernels/*.cu: same line count, no asm left.

  test_rewrite.py [REWRITER]   (default: ../rewrite.py next to this file)
"""
import glob
import os
import re
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REWRITER = os.path.join(HERE, '..', 'rewrite.py')
SOURCE = os.path.join(HERE, '..', '..')


def rewrite(src):
    """(exit code, rewritten text without the two header lines, stderr)."""
    with tempfile.TemporaryDirectory() as d:
        cu, cpp = os.path.join(d, 'snippet.cu'), os.path.join(d, 'out', 'snippet.cu.cpp')
        with open(cu, 'w', encoding='utf-8') as f:
            f.write(src)
        p = subprocess.run([sys.executable, REWRITER, cu, cpp], capture_output=True, text=True)
        if p.returncode != 0:
            return p.returncode, '', p.stderr
        with open(cpp, encoding='utf-8') as f:
            head1, head2, rest = f.read().split('\n', 2)
        assert head1 == '#include "emu/kernel.h"' and head2.startswith('#line 1 "'), (head1, head2)
        return 0, rest, p.stderr


def squash(s):
    return ' '.join(s.split())


class Asm(unittest.TestCase):
    def ok(self, src):
        code, out, err = rewrite(src)
        self.assertEqual(code, 0, err)
        self.assertEqual(out.count('\n'), src.count('\n'), 'line count changed:\n' + out)
        return out

    def refused(self, src, *says):
        code, _, err = rewrite(src)
        self.assertNotEqual(code, 0)
        self.assertIn('snippet.cu:', err)
        for s in says:
            self.assertIn(s, err)

    def test_outputs_and_inputs_in_asm_order(self):
        src = ('void f(uint32_t (&r)[4], const void* p) {\n'
               '  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\\n"\n'
               '               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])\n'
               '               : "r"(smem_addr(p)));\n'
               '}\n')
        out = self.ok(src)
        lines = out.split('\n')
        self.assertIn('::emu::ptx::exec(::emu::Site{"asm", __FILE__, 2}, '
                      '"ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\\n"', lines[1])
        # Each operand stays on its line, outputs first, in the asm's order.
        self.assertEqual(squash(lines[2]), ", ::emu::ptx::out<'r'>(r[0]), ::emu::ptx::out<'r'>(r[1]), "
                         "::emu::ptx::out<'r'>(r[2]), ::emu::ptx::out<'r'>(r[3])")
        self.assertEqual(squash(lines[3]), ", ::emu::ptx::in<'r'>(smem_addr(p)));")
        self.assertNotIn('asm', out.replace('"asm"', ''))

    def test_inout_immediate_empty_sections_and_clobbers(self):
        out = squash(self.ok(
            'asm volatile("mma {%0}, {%1}, {%0};" : "+f"(d[0]) : "r"(a ? 1 : 0));\n'
            'asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\\n" ::"r"(s), "l"(g),\n'
            '             "r"(valid ? 16 : 0) : "memory");\n'
            'asm volatile("cp.async.commit_group;\\n" ::: "memory");\n'
            'asm volatile("cp.async.wait_group %0;\\n" ::"n"(N - 1) : "memory");\n'
            '__asm__ __volatile__("trap;");\n'
            'asm("x %0;" : "=&l"(v));\n'))
        self.assertIn("::emu::ptx::exec(::emu::Site{\"asm\", __FILE__, 1}, \"mma {%0}, {%1}, {%0};\", "
                      "::emu::ptx::inout<'f'>(d[0]), ::emu::ptx::in<'r'>(a ? 1 : 0));", out)
        self.assertIn("::emu::ptx::in<'r'>(s), ::emu::ptx::in<'l'>(g), ::emu::ptx::in<'r'>(valid ? 16 : 0));",
                      out)
        self.assertIn('Site{"asm", __FILE__, 4}, "cp.async.commit_group;\\n");', out)
        self.assertIn('"cp.async.wait_group %0;\\n", ::emu::ptx::imm<(N - 1)>());', out)
        self.assertIn('Site{"asm", __FILE__, 6}, "trap;");', out)
        self.assertIn("::emu::ptx::out<'l'>(v));", out)
        self.assertNotIn('memory', out)

    def test_template_literals_kept_and_lines_kept(self):
        src = ('int a;\n'
               'asm volatile(\n'
               '    "mma.sync {%0}, {%1}, "\n'
               '    "{%2};\\n"\n'
               '    : "+f"(d)\n'
               '    : "r"(x),\n'
               '      "r"(y));\n'
               'int b;\n')
        out = self.ok(src)
        lines = out.split('\n')
        self.assertEqual(lines[0], 'int a;')
        self.assertIn('"mma.sync {%0}, {%1}, "', lines[2])
        self.assertIn('"{%2};\\n"', lines[3])
        self.assertIn("inout<'f'>(d)", lines[4])
        self.assertIn("in<'r'>(x)", lines[5])
        self.assertIn("in<'r'>(y));", lines[6])
        self.assertEqual(lines[7], 'int b;')

    def test_asm_in_comments_strings_and_names_untouched(self):
        src = ('// asm volatile("x" : "=r"(a));\n'
               'const char* s = "asm volatile(\\"x\\")";\n'
               'int my_asm(int asm_count);\n')
        self.assertEqual(self.ok(src), src)

    def test_refused(self):
        self.refused('asm volatile("x %0;" : [out] "=r"(a));\n', 'named asm operands')
        self.refused('asm goto("x" :::: done);\n', 'asm goto')
        self.refused('asm volatile(TEMPLATE : "=r"(a));\n', 'string literals')
        self.refused('asm volatile("x %0;" : "=m"(a));\n', 'constraint "=m"')
        self.refused('asm volatile("x %0;" : "r"(a));\n', 'in the outputs')
        self.refused('asm volatile("x %0;" :: "=r"(a));\n', 'in the inputs')
        self.refused('asm volatile("x %0, %1;" : "=r"(a) : "0"(b));\n', 'constraint "0"')
        self.refused('int x;\nasm volatile("x %0;" : "=n"(a));\n', 'snippet.cu:2')


class LaunchesAndShared(unittest.TestCase):
    def test_launch_and_shared(self):
        src = ('__global__ void k(float* x) {\n'
               '  __shared__ __align__(16) float tile[32][4];\n'
               '  extern __shared__ uint4 dyn[];\n'
               '}\n'
               'void run(float* x, cudaStream_t s) { k<<<dim3(2), 64, 128, s>>>(x); }\n')
        code, out, err = rewrite(src)
        self.assertEqual(code, 0, err)
        self.assertEqual(out.count('\n'), src.count('\n'))
        self.assertIn('auto& tile = ::emu::shared_var<::emu::Aligned<float[32][4], 16>, ', out)
        self.assertIn('uint4* dyn = ::emu::shared_dynamic<uint4>();', out)
        self.assertIn('::emu::launch(k, ::emu::Site{"k", __FILE__, 5}, dim3(2), 64, 128, s)(x);', out)


class ProjectKernels(unittest.TestCase):
    def test_every_kernel_keeps_its_lines_and_loses_its_asm(self):
        files = sorted(glob.glob(os.path.join(SOURCE, 'kernels', '*.cu')))
        self.assertTrue(files)
        for cu in files:
            with open(cu, encoding='utf-8') as f:
                src = f.read()
            code, out, err = rewrite(src)
            self.assertEqual(code, 0, cu + ': ' + err)
            self.assertEqual(out.count('\n'), src.count('\n'), cu)
            self.assertIsNone(re.search(r'\basm\s+volatile\b|<<<|\b__shared__\s', out), cu)


if __name__ == '__main__':
    if len(sys.argv) > 1 and not sys.argv[1].startswith('-'):
        REWRITER = sys.argv.pop(1)
    unittest.main()
