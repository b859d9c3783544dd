// The PTX instructions of inline asm on the emulated device (emu/include/emu/ptx.h),
// as the PTX ISA defines them (sections "Warp Level Matrix Load Instruction:
// ldmatrix", "Matrix Fragments for mma.m16n8k16 with floating point type",
// "Data Movement and Conversion Instructions: cp.async",
// "cp.async.commit_group", "cp.async.wait_group / cp.async.wait_all").
//
// A template is parsed once per string literal into instructions whose
// operands are the asm's (%N) or immediates; each execution checks the
// operands' constraint letters against what the instruction takes.
//   ldmatrix .m8n8 .b16, .x1/.x2/.x4 matrices: lane i (i < 8 * num) gives the
//     shared-window address of row i%8 of matrix i/8, 16-byte aligned, all
//     16 bytes inside the block's shared memory (dynamic part or one
//     __shared__ declaration). Lane L receives in register m
//     {M_m[L/4][2(L%4)], M_m[L/4][2(L%4)+1]}, the first in the low 16 bits;
//     .trans: {M_m[2(L%4)][L/4], M_m[2(L%4)+1][L/4]}. Without .shared the
//     address is generic and must point into shared memory.
//   mma.m16n8k16.row.col.f32.bf16.bf16.f32: with g = L/4, t = L%4,
//     A (16x16): a_i (half i%2 of register i/2) is A[g + 8 (i/2 % 2)][2t + i%2 + 8 (i/4)];
//     B (16x8):  b_i (half i%2 of register i/2) is B[2t + i%2 + 8 (i/2)][g];
//     C, D (16x8 fp32): c_i is C[g + 8 (i/2)][2t + i%2].
//     D = A B + C, each element an fp32 fma chain over k = 0..15 starting
//     from C (the bf16 products are exact in fp32; the tensor cores' own
//     order and rounding of the sum are not known, and not modelled).
//   cp.async: dst a shared-window address, src a generic address of device
//     memory (a live cudaMalloc range: emu::check_device_range), both
//     aligned to cp-size (4, 8, 16; .cg: 16); src-size (<= cp-size) bytes
//     are read and the rest zero-filled; src-size 0 reads nothing. Lazy
//     copies wait in the thread's queue: commit_group closes the open ones
//     into a group (possibly empty), wait_group N performs every group but
//     the newest N in commit order, wait_all all of them. Copies a thread
//     never waits for never land (the block's shared memory ends with it).
#include "emu/ptx.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "emu/device.h"

namespace emu {

CpAsync& cp_async_mode() {
  static CpAsync m = [] {
    const char* e = std::getenv("EMU_CP_ASYNC");
    if (!e || std::string(e) == "lazy") return CpAsync::Lazy;
    if (std::string(e) != "eager") detail::bad_setting("EMU_CP_ASYNC", e, "lazy or eager");
    return CpAsync::Eager;
  }();
  return m;
}

namespace ptx {
namespace {

// ------------------------------------------------------------- parsing --

// An instruction operand: %N, an immediate, a vector {..} of %N, or an
// address [%N] / [%N+imm].
struct Arg {
  enum class Kind { Reg, Imm, Vec, Addr } kind;
  int reg = -1;
  int64_t imm = 0;
  std::vector<int> regs;
};

enum class Op { Ldmatrix, Mma, CpAsync, Commit, Wait, WaitAll };

struct Instr {
  Op op;
  std::string text;  // as written, for messages
  std::vector<Arg> args;
  int num = 0;         // ldmatrix: matrices
  bool trans = false;  // ldmatrix
  bool shared = true;  // ldmatrix: .shared (else generic addressing)
  bool cg = false;     // cp.async: .cg (16 bytes only)
  const emu::detail::Collective* coll = nullptr;
};

struct Program {
  std::vector<Instr> instrs;
};

[[noreturn]] void fail(const Site& site, const std::string& what) {
  emu::detail::kernel_fail(std::string(site.file) + ":" + std::to_string(site.line) + ": " + what);
}

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> v;
  int depth = 0;
  std::string cur;
  for (char c : s) {
    if (c == '{' || c == '[') ++depth;
    if (c == '}' || c == ']') --depth;
    if (c == sep && depth == 0) {
      v.push_back(trim(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  v.push_back(trim(cur));
  return v;
}

bool parse_int(const std::string& s, int64_t* v) {
  if (s.empty()) return false;
  char* end = nullptr;
  *v = std::strtoll(s.c_str(), &end, 0);
  return end && *end == '\0';
}

// "%N" -> N (< n_ops).
int parse_reg(const Site& site, const std::string& s, size_t n_ops, const std::string& instr) {
  int64_t v = -1;
  if (s.size() < 2 || s[0] != '%' || !parse_int(s.substr(1), &v) || !std::isdigit(static_cast<unsigned char>(s[1])))
    fail(site, "'" + instr + "': operand '" + s + "' is not an asm operand %N (PTX registers are not emulated)");
  if (v < 0 || size_t(v) >= n_ops)
    fail(site, "'" + instr + "': " + s + " but the asm has " + std::to_string(n_ops) + " operands");
  return int(v);
}

Arg parse_arg(const Site& site, const std::string& s, size_t n_ops, const std::string& instr) {
  Arg a{};
  if (s.size() >= 2 && s.front() == '{' && s.back() == '}') {
    a.kind = Arg::Kind::Vec;
    for (const std::string& r : split(s.substr(1, s.size() - 2), ',')) a.regs.push_back(parse_reg(site, r, n_ops, instr));
  } else if (s.size() >= 2 && s.front() == '[' && s.back() == ']') {
    a.kind = Arg::Kind::Addr;
    std::string in = trim(s.substr(1, s.size() - 2));
    const size_t plus = in.find_first_of("+-", 1);
    if (plus != std::string::npos) {
      if (!parse_int(trim(in.substr(plus + 1)), &a.imm)) fail(site, "'" + instr + "': cannot read the address " + s);
      if (in[plus] == '-') a.imm = -a.imm;
      in = trim(in.substr(0, plus));
    }
    a.reg = parse_reg(site, in, n_ops, instr);
  } else if (!s.empty() && s[0] == '%') {
    a.kind = Arg::Kind::Reg;
    a.reg = parse_reg(site, s, n_ops, instr);
  } else {
    a.kind = Arg::Kind::Imm;
    if (!parse_int(s, &a.imm)) fail(site, "'" + instr + "': cannot read the operand '" + s + "'");
  }
  return a;
}

// The collectives, one object per variant (lanes must meet at the same one).
void complete_ldmatrix(const emu::detail::Collective& self, void* const lanes[32], unsigned mask);
void complete_mma(const emu::detail::Collective& self, void* const lanes[32], unsigned mask);

struct LdmatrixCollective : emu::detail::Collective {
  int num;
  bool trans;
};
const LdmatrixCollective kLdmatrix[3][2] = {
    {{{"ldmatrix.sync.aligned.m8n8.x1.b16", complete_ldmatrix}, 1, false},
     {{"ldmatrix.sync.aligned.m8n8.x1.trans.b16", complete_ldmatrix}, 1, true}},
    {{{"ldmatrix.sync.aligned.m8n8.x2.b16", complete_ldmatrix}, 2, false},
     {{"ldmatrix.sync.aligned.m8n8.x2.trans.b16", complete_ldmatrix}, 2, true}},
    {{{"ldmatrix.sync.aligned.m8n8.x4.b16", complete_ldmatrix}, 4, false},
     {{"ldmatrix.sync.aligned.m8n8.x4.trans.b16", complete_ldmatrix}, 4, true}},
};
const emu::detail::Collective kMma{"mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", complete_mma};

// The instruction's dot-separated parts after the opcode, "::" kept inside
// a part (".shared::cta").
std::vector<std::string> modifiers(const std::string& opcode) {
  std::vector<std::string> v;
  size_t i = 0;
  while (i <= opcode.size()) {
    size_t j = opcode.find('.', i);
    if (j == std::string::npos) j = opcode.size();
    v.push_back(opcode.substr(i, j - i));
    i = j + 1;
  }
  return v;
}

Instr parse_instr(const Site& site, const std::string& text, size_t n_ops) {
  Instr in{};
  in.text = text;
  size_t sp = 0;
  while (sp < text.size() && !std::isspace(static_cast<unsigned char>(text[sp]))) ++sp;
  const std::string opcode = text.substr(0, sp), rest = trim(text.substr(sp));
  if (!opcode.empty() && opcode[0] == '@') fail(site, "'" + text + "': predicated instructions are not emulated");
  const std::vector<std::string> m = modifiers(opcode);
  auto unsupported = [&]() -> Instr { fail(site, "PTX instruction not emulated: '" + text + "'"); };
  if (!rest.empty())
    for (const std::string& a : split(rest, ',')) in.args.push_back(parse_arg(site, a, n_ops, text));
  auto want_args = [&](size_t lo, size_t hi) {
    if (in.args.size() < lo || in.args.size() > hi)
      fail(site, "'" + text + "': " + std::to_string(in.args.size()) + " operands");
  };
  if (m[0] == "ldmatrix") {
    // ldmatrix.sync.aligned.m8n8.num{.trans}{.shared{::cta}}.b16
    if (m.size() < 6 || m[1] != "sync" || m[2] != "aligned" || m[3] != "m8n8") return unsupported();
    size_t i = 4;
    if (m[i] == "x1") {
      in.num = 1;
    } else if (m[i] == "x2") {
      in.num = 2;
    } else if (m[i] == "x4") {
      in.num = 4;
    } else {
      return unsupported();
    }
    ++i;
    if (i < m.size() && m[i] == "trans") {
      in.trans = true;
      ++i;
    }
    in.shared = i < m.size() && (m[i] == "shared" || m[i] == "shared::cta");
    if (in.shared) ++i;
    if (i + 1 != m.size() || m[i] != "b16") return unsupported();
    want_args(2, 2);
    if (in.args[0].kind != Arg::Kind::Vec || int(in.args[0].regs.size()) != in.num || in.args[1].kind != Arg::Kind::Addr)
      fail(site, "'" + text + "': expects {" + std::to_string(in.num) + " registers}, [address]");
    in.op = Op::Ldmatrix;
    in.coll = &kLdmatrix[in.num == 1 ? 0 : in.num == 2 ? 1 : 2][in.trans ? 1 : 0];
  } else if (m[0] == "mma") {
    if (opcode != "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32") return unsupported();
    want_args(4, 4);
    const size_t sizes[4] = {4, 4, 2, 4};
    for (int k = 0; k < 4; ++k)
      if (in.args[k].kind != Arg::Kind::Vec || in.args[k].regs.size() != sizes[k])
        fail(site, "'" + text + "': expects {d0..d3}, {a0..a3}, {b0, b1}, {c0..c3}");
    in.op = Op::Mma;
    in.coll = &kMma;
  } else if (m[0] == "cp" && m.size() >= 2 && m[1] == "async") {
    if (opcode == "cp.async.commit_group") {
      want_args(0, 0);
      in.op = Op::Commit;
    } else if (opcode == "cp.async.wait_group") {
      want_args(1, 1);
      in.op = Op::Wait;
    } else if (opcode == "cp.async.wait_all") {
      want_args(0, 0);
      in.op = Op::WaitAll;
    } else {
      // cp.async.{ca,cg}.shared{::cta}.global{.L2::{64,128,256}B} [dst], [src], cp-size{, src-size}
      if (m.size() < 5 || (m[2] != "ca" && m[2] != "cg") || (m[3] != "shared" && m[3] != "shared::cta") ||
          m[4] != "global")
        return unsupported();
      for (size_t i = 5; i < m.size(); ++i)  // prefetch sizes: hints, nothing to emulate
        if (m[i] != "L2::64B" && m[i] != "L2::128B" && m[i] != "L2::256B") return unsupported();
      want_args(3, 4);
      if (in.args[0].kind != Arg::Kind::Addr || in.args[1].kind != Arg::Kind::Addr ||
          (in.args[2].kind != Arg::Kind::Imm && in.args[2].kind != Arg::Kind::Reg) ||
          (in.args.size() == 4 && in.args[3].kind != Arg::Kind::Imm && in.args[3].kind != Arg::Kind::Reg))
        fail(site, "'" + text + "': expects [dst], [src], cp-size{, src-size}");
      in.cg = m[2] == "cg";
      in.op = Op::CpAsync;
    }
  } else {
    return unsupported();
  }
  return in;
}

std::unique_ptr<Program> parse(const Site& site, const char* text, size_t n_ops) {
  auto p = std::make_unique<Program>();
  // Statements end with ';'; scopes ({ ... }), declarations (.reg) and
  // labels are not emulated (they fail as unknown instructions).
  for (std::string stmt : split(text, ';')) {
    stmt = trim(stmt);
    if (stmt.empty()) continue;
    if (stmt[0] == '{' || stmt[0] == '.')
      fail(site, "PTX '" + stmt + "': scopes and declarations are not emulated");
    p->instrs.push_back(parse_instr(site, stmt, n_ops));
  }
  return p;
}

const Program& program(const Site& site, const char* text, size_t n_ops) {
  // Keyed by the literal's address (and operand count, should two asm
  // statements share one literal).
  thread_local std::unordered_map<const char*, std::vector<std::pair<size_t, std::unique_ptr<Program>>>> cache;
  auto& slot = cache[text];
  for (const auto& [n, prog] : slot)
    if (n == n_ops) return *prog;
  slot.emplace_back(n_ops, parse(site, text, n_ops));
  return *slot.back().second;
}

// ------------------------------------------------------------ operands --

const char* letter_name(char c) {
  switch (c) {
    case 'r': return "a 32-bit register (\"r\")";
    case 'l': return "a 64-bit register (\"l\")";
    case 'h': return "a 16-bit register (\"h\")";
    case 'f': return "an f32 register (\"f\")";
    case 'd': return "an f64 register (\"d\")";
    case 'n': return "an immediate (\"n\")";
  }
  return "?";
}

struct Ctx {
  const Site& site;
  const Instr& in;
  const Operand* ops;
};

[[noreturn]] void bad_operand(const Ctx& c, int reg, const std::string& want) {
  fail(c.site, "'" + c.in.text + "': %" + std::to_string(reg) + " is " + letter_name(c.ops[reg].letter) + ", " +
                   want);
}

// The value of a source operand of one of `letters`.
uint64_t source(const Ctx& c, int reg, const char* letters) {
  const Operand& o = c.ops[reg];
  if (o.dir == Operand::Dir::Out) bad_operand(c, reg, "an output, read by the instruction");
  if (!std::strchr(letters, o.letter)) bad_operand(c, reg, std::string("the instruction takes ") + letters);
  return o.bits;
}

// Checks a destination operand of letter `letter`; returns where it goes.
void* destination(const Ctx& c, int reg, char letter) {
  const Operand& o = c.ops[reg];
  if (o.dir != Operand::Dir::Out && o.dir != Operand::Dir::InOut)
    bad_operand(c, reg, "an input, written by the instruction (\"=\" or \"+\")");
  if (o.letter != letter) bad_operand(c, reg, std::string("the instruction writes ") + letter_name(letter));
  return o.target;
}

uint64_t value(const Ctx& c, const Arg& a, const char* letters) {
  return a.kind == Arg::Kind::Imm ? uint64_t(a.imm) : source(c, a.reg, letters);
}

// ------------------------------------------------------------- ldmatrix --

struct LdmatrixLane {
  const Site* site;
  const Instr* in;
  uint64_t addr;  // shared-window address of this lane's row
  uint32_t out[4];
};

void complete_ldmatrix(const emu::detail::Collective& self, void* const lanes[32], unsigned) {
  const auto& kind = static_cast<const LdmatrixCollective&>(self);
  const unsigned char* rows[32] = {};
  for (int i = 0; i < 8 * kind.num; ++i) {
    const auto* l = static_cast<const LdmatrixLane*>(lanes[i]);
    if (l->addr % 16 != 0)
      fail(*l->site, "'" + l->in->text + "': lane " + std::to_string(i) + "'s row address " + std::to_string(l->addr) +
                         " is not 16-byte aligned");
    const std::string what = "'" + l->in->text + "', lane " + std::to_string(i) + "'s row";
    try {
      rows[i] = static_cast<const unsigned char*>(emu::detail::shared_window(l->addr, 16, what.c_str()));
    } catch (const KernelError& e) {
      fail(*l->site, e.what());
    }
  }
  auto elem = [&](int m, int r, int col) -> uint32_t {  // M_m[r][col]
    uint16_t v;
    std::memcpy(&v, rows[8 * m + r] + 2 * col, 2);
    return v;
  };
  for (int L = 0; L < 32; ++L) {
    auto* l = static_cast<LdmatrixLane*>(lanes[L]);
    for (int m = 0; m < kind.num; ++m) {
      const uint32_t lo = kind.trans ? elem(m, 2 * (L % 4), L / 4) : elem(m, L / 4, 2 * (L % 4));
      const uint32_t hi = kind.trans ? elem(m, 2 * (L % 4) + 1, L / 4) : elem(m, L / 4, 2 * (L % 4) + 1);
      l->out[m] = lo | (hi << 16);
    }
  }
}

void run_ldmatrix(const Ctx& c) {
  const Arg& addr = c.in.args[1];
  LdmatrixLane lane{&c.site, &c.in, 0, {}};
  void* dst[4];
  for (int m = 0; m < c.in.num; ++m) dst[m] = destination(c, c.in.args[0].regs[size_t(m)], 'r');
  const uint64_t base = source(c, addr.reg, c.in.shared ? "rl" : "l");
  if (c.in.shared) {
    lane.addr = base + uint64_t(addr.imm);
  } else {  // generic addressing: must point into shared memory
    const auto* p = reinterpret_cast<const unsigned char*>(uintptr_t(base)) + addr.imm;
    const std::string what = std::string(c.site.file) + ":" + std::to_string(c.site.line) + ": '" + c.in.text + "'";
    lane.addr = emu::detail::shared_address(p, what.c_str());
  }
  emu::detail::warp_collective(*c.in.coll, 0xffffffffu, &lane);
  for (int m = 0; m < c.in.num; ++m) std::memcpy(dst[m], &lane.out[m], 4);
}

// ------------------------------------------------------------------ mma --

struct MmaLane {
  uint32_t a[4], b[2];
  float c[4], d[4];
};

float bf16_value(uint32_t bits16) {
  const uint32_t u = bits16 << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
float half_of(uint32_t reg, int i) { return bf16_value(i % 2 == 0 ? reg & 0xffffu : reg >> 16); }

void complete_mma(const emu::detail::Collective&, void* const lanes[32], unsigned) {
  float A[16][16], B[16][8], C[16][8];
  for (int L = 0; L < 32; ++L) {
    const auto* l = static_cast<const MmaLane*>(lanes[L]);
    const int g = L / 4, t = L % 4;
    for (int i = 0; i < 8; ++i) A[g + 8 * (i / 2 % 2)][2 * t + i % 2 + 8 * (i / 4)] = half_of(l->a[i / 2], i);
    for (int i = 0; i < 4; ++i) B[2 * t + i % 2 + 8 * (i / 2)][g] = half_of(l->b[i / 2], i);
    for (int i = 0; i < 4; ++i) C[g + 8 * (i / 2)][2 * t + i % 2] = l->c[i];
  }
  for (int L = 0; L < 32; ++L) {
    auto* l = static_cast<MmaLane*>(lanes[L]);
    const int g = L / 4, t = L % 4;
    for (int i = 0; i < 4; ++i) {
      const int r = g + 8 * (i / 2), col = 2 * t + i % 2;
      float acc = C[r][col];
      for (int k = 0; k < 16; ++k) acc = std::fma(A[r][k], B[k][col], acc);
      l->d[i] = acc;
    }
  }
}

void run_mma(const Ctx& c) {
  MmaLane lane{};
  void* dst[4];
  for (int i = 0; i < 4; ++i) dst[i] = destination(c, c.in.args[0].regs[size_t(i)], 'f');
  for (int i = 0; i < 4; ++i) lane.a[i] = uint32_t(source(c, c.in.args[1].regs[size_t(i)], "r"));
  for (int i = 0; i < 2; ++i) lane.b[i] = uint32_t(source(c, c.in.args[2].regs[size_t(i)], "r"));
  for (int i = 0; i < 4; ++i) {
    const uint32_t bits = uint32_t(source(c, c.in.args[3].regs[size_t(i)], "f"));
    std::memcpy(&lane.c[i], &bits, 4);
  }
  emu::detail::warp_collective(kMma, 0xffffffffu, &lane);
  for (int i = 0; i < 4; ++i) std::memcpy(dst[i], &lane.d[i], 4);
}

// ------------------------------------------------------------- cp.async --

struct Copy {
  unsigned char* dst;
  const unsigned char* src;
  unsigned bytes, src_bytes;
};

struct AsyncCopies : emu::detail::ThreadExtension {
  std::vector<Copy> open;                 // issued since the last commit_group
  std::deque<std::vector<Copy>> groups;   // committed, not yet waited for
};

AsyncCopies& copies() {
  auto& ext = emu::detail::current->ext;
  if (!ext) ext = std::make_unique<AsyncCopies>();
  return static_cast<AsyncCopies&>(*ext);
}

void perform(const Copy& c) {
  if (c.src_bytes) std::memcpy(c.dst, c.src, c.src_bytes);
  std::memset(c.dst + c.src_bytes, 0, c.bytes - c.src_bytes);
}

void run_cp_async(const Ctx& c) {
  const std::vector<Arg>& a = c.in.args;
  const uint64_t bytes = value(c, a[2], "n");
  if (bytes != 4 && bytes != 8 && bytes != 16) fail(c.site, "'" + c.in.text + "': cp-size " + std::to_string(bytes) + " (4, 8 or 16)");
  if (c.in.cg && bytes != 16) fail(c.site, "'" + c.in.text + "': cp.async.cg copies 16 bytes");
  const uint64_t src_bytes = a.size() == 4 ? value(c, a[3], "rn") : bytes;
  if (src_bytes > bytes)
    fail(c.site, "'" + c.in.text + "': src-size " + std::to_string(src_bytes) + " above cp-size " + std::to_string(bytes));
  const uint64_t dst_addr = source(c, a[0].reg, "rl") + uint64_t(a[0].imm);
  const auto* src = reinterpret_cast<const unsigned char*>(uintptr_t(source(c, a[1].reg, "l"))) + a[1].imm;
  if (dst_addr % bytes != 0)
    fail(c.site, "'" + c.in.text + "': destination " + std::to_string(dst_addr) + " is not " + std::to_string(bytes) + "-byte aligned");
  if (reinterpret_cast<uintptr_t>(src) % bytes != 0) {
    char b[32];
    std::snprintf(b, sizeof b, "%p", static_cast<const void*>(src));
    fail(c.site, "'" + c.in.text + "': source " + b + " is not " + std::to_string(bytes) + "-byte aligned");
  }
  const std::string where = std::string(c.site.file) + ":" + std::to_string(c.site.line) + ": '" + c.in.text + "'";
  auto* dst = static_cast<unsigned char*>(emu::detail::shared_window(dst_addr, bytes, (where + " destination").c_str()));
  if (src_bytes) emu::check_device_range(src, src_bytes, (where + " source").c_str());
  const Copy copy{dst, src, unsigned(bytes), unsigned(src_bytes)};
  if (cp_async_mode() == CpAsync::Eager) {
    perform(copy);
  } else {
    copies().open.push_back(copy);
  }
}

void commit() {
  AsyncCopies& q = copies();
  q.groups.push_back(std::move(q.open));
  q.open.clear();
}

void wait_group(uint64_t n) {
  AsyncCopies& q = copies();
  while (q.groups.size() > n) {
    for (const Copy& c : q.groups.front()) perform(c);
    q.groups.pop_front();
  }
}

}  // namespace

void execute(const Site& site, const char* text, const Operand* ops, size_t n) {
  const Program& p = program(site, text, n);
  for (const Instr& in : p.instrs) {
    const Ctx c{site, in, ops};
    switch (in.op) {
      case Op::Ldmatrix: run_ldmatrix(c); break;
      case Op::Mma: run_mma(c); break;
      case Op::CpAsync: run_cp_async(c); break;
      case Op::Commit: commit(); break;
      case Op::Wait: wait_group(value(c, in.args[0], "n")); break;
      case Op::WaitAll:
        commit();
        wait_group(0);
        break;
    }
  }
}

}  // namespace ptx
}  // namespace emu
