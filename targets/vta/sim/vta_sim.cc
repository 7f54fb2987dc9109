// accelc VTA simulator: see vta_sim.h for the model. Errors are C++ exceptions inside this file
// and become status codes at the C boundary; nothing here aborts.
#include "vta_sim.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <limits>
#include <new>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#ifndef VTA_SIM_SOURCE_HASH
#define VTA_SIM_SOURCE_HASH ""
#endif

namespace {

constexpr int kInsnBytes = 16;
constexpr int kUopBytes = 4;
constexpr uint64_t kDefaultMaxUopIters = uint64_t(1) << 28;
constexpr uint64_t kMaxInsns = uint64_t(1) << 26;  // 1 GiB of instructions

enum Opcode { kLoad = 0, kStore = 1, kGemm = 2, kFinish = 3, kAlu = 4 };
enum MemType { kUop = 0, kWgt = 1, kInp = 2, kAcc = 3, kOut = 4, kAcc8 = 5 };
enum AluOp { kMin = 0, kMax = 1, kAdd = 2, kShr = 3, kMul = 4 };
enum Queue { kL2G = 0, kG2L = 1, kG2S = 2, kS2G = 3, kNumQueues = 4 };
enum Engine { kLoadEngine = 0, kComputeEngine = 1, kStoreEngine = 2, kNumEngines = 3 };

const char* const kMemName[] = {"UOP", "WGT", "INP", "ACC", "OUT", "ACC_8BIT"};
const char* const kAluName[] = {"MIN", "MAX", "ADD", "SHR", "MUL"};
const char* const kQueueName[] = {"l2g (load->compute)", "g2l (compute->load)",
                                  "g2s (compute->store)", "s2g (store->compute)"};
const char* const kEngineName[] = {"load", "compute", "store"};

struct SimError {
  int code;
  int64_t insn;
  std::string msg;
};

[[noreturn]] void Fail(int code, int64_t insn, const std::string& msg) {
  throw SimError{code, insn, msg};
}

template <typename... Args>
std::string Cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// ---- instruction layout (C bitfields on uint64_t / uint32_t; see config.py _pack_fields) ----

enum FieldId {
  F_OPCODE, F_POP_PREV, F_POP_NEXT, F_PUSH_PREV, F_PUSH_NEXT,
  F_MEMORY_TYPE, F_SRAM_BASE, F_DRAM_BASE, F_Y_SIZE, F_X_SIZE, F_X_STRIDE,
  F_Y_PAD_0, F_Y_PAD_1, F_X_PAD_0, F_X_PAD_1,
  F_RESET, F_UOP_BGN, F_UOP_END, F_ITER_OUT, F_ITER_IN,
  F_DST_FO, F_DST_FI, F_SRC_FO, F_SRC_FI, F_WGT_FO, F_WGT_FI,
  F_ALU_OPCODE, F_USE_IMM, F_IMM,
  F_UOP_DST, F_UOP_SRC, F_UOP_WGT,
  F_COUNT
};

struct Field {
  int offset = -1;
  int width = 0;
  bool is_signed = false;
};
using Layout = std::array<Field, F_COUNT>;
using FieldList = std::vector<std::pair<FieldId, int>>;

// Place fields in order; a field never straddles a storage unit of `unit` bits.
bool Pack(const FieldList& fields, int unit, int total, const char* kind, Layout* out,
          std::string* err) {
  int pos = 0;
  for (const auto& [id, width] : fields) {
    if (width > 0 && pos / unit != (pos + width - 1) / unit) pos = (pos / unit + 1) * unit;
    (*out)[id] = Field{pos, width, id == F_IMM};
    pos += width;
  }
  if (pos > total) {
    *err = Cat(kind, " instruction needs ", pos, " bits > ", total, " with this config");
    return false;
  }
  return true;
}

struct Config {
  int inp_bits, wgt_bits, acc_bits, out_bits;
  int batch, block_in, block_out;
  int log_uop_depth, log_inp_depth, log_wgt_depth, log_acc_depth;
  uint64_t uop_depth, inp_depth, wgt_depth, acc_depth;
  uint64_t inp_elem_bytes, wgt_elem_bytes, acc_elem_bytes, out_elem_bytes;
  uint64_t bus_bytes;
  uint64_t dma_latency, gemm_depth, alu_depth, gemm_ii, alu_ii, cmd_depth, dep_depth;
  Layout mem, gemm, alu, header, uop;
};

int Log2(uint64_t v) {
  int l = 0;
  while ((uint64_t(1) << l) < v) ++l;
  return l;
}

bool InRange(int32_t v, int32_t lo, int32_t hi, const char* name, std::string* err) {
  if (v < lo || v > hi) {
    *err = Cat("config ", name, "=", v, " outside [", lo, ", ", hi, "]");
    return false;
  }
  return true;
}

// Mirrors VTAConfig.__post_init__ in config.py.
bool Derive(const vta_sim_config& c, Config* d, std::string* err) {
  if (!InRange(c.log_inp_width, 3, 5, "LOG_INP_WIDTH", err) ||
      !InRange(c.log_wgt_width, 3, 5, "LOG_WGT_WIDTH", err) ||
      !InRange(c.log_acc_width, 4, 6, "LOG_ACC_WIDTH", err) ||
      !InRange(c.log_batch, 0, 4, "LOG_BATCH", err) ||
      !InRange(c.log_block_in, 0, 6, "LOG_BLOCK_IN", err) ||
      !InRange(c.log_block_out, 0, 6, "LOG_BLOCK_OUT", err) ||
      !InRange(c.log_uop_buff_size, 3, 24, "LOG_UOP_BUFF_SIZE", err) ||
      !InRange(c.log_inp_buff_size, 1, 24, "LOG_INP_BUFF_SIZE", err) ||
      !InRange(c.log_wgt_buff_size, 1, 24, "LOG_WGT_BUFF_SIZE", err) ||
      !InRange(c.log_acc_buff_size, 1, 24, "LOG_ACC_BUFF_SIZE", err) ||
      !InRange(c.log_bus_width, 3, 10, "LOG_BUS_WIDTH", err) ||
      !InRange(c.dma_latency, 0, 1 << 20, "DMA_LATENCY", err) ||
      !InRange(c.gemm_pipeline_depth, 0, 1024, "GEMM_PIPELINE_DEPTH", err) ||
      !InRange(c.alu_pipeline_depth, 0, 1024, "ALU_PIPELINE_DEPTH", err) ||
      !InRange(c.gemm_ii, 1, 64, "GEMM_II", err) || !InRange(c.alu_ii, 1, 64, "ALU_II", err) ||
      !InRange(c.cmd_queue_depth, 1, 1 << 16, "CMD_QUEUE_DEPTH", err) ||
      !InRange(c.dep_queue_depth, 1, 1 << 16, "DEP_QUEUE_DEPTH", err)) {
    return false;
  }
  if (c.log_acc_width < std::max(c.log_inp_width, c.log_wgt_width)) {
    *err = "accumulator must be at least as wide as inputs and weights";
    return false;
  }
  d->inp_bits = 1 << c.log_inp_width;
  d->wgt_bits = 1 << c.log_wgt_width;
  d->acc_bits = 1 << c.log_acc_width;
  d->out_bits = d->inp_bits;
  d->batch = 1 << c.log_batch;
  d->block_in = 1 << c.log_block_in;
  d->block_out = 1 << c.log_block_out;
  d->inp_elem_bytes = uint64_t(d->batch) * d->block_in * d->inp_bits / 8;
  d->wgt_elem_bytes = uint64_t(d->block_out) * d->block_in * d->wgt_bits / 8;
  d->acc_elem_bytes = uint64_t(d->batch) * d->block_out * d->acc_bits / 8;
  d->out_elem_bytes = uint64_t(d->batch) * d->block_out * d->out_bits / 8;
  d->log_uop_depth = c.log_uop_buff_size - Log2(kUopBytes);
  d->log_inp_depth = c.log_inp_buff_size - Log2(d->inp_elem_bytes);
  d->log_wgt_depth = c.log_wgt_buff_size - Log2(d->wgt_elem_bytes);
  d->log_acc_depth = c.log_acc_buff_size - Log2(d->acc_elem_bytes);
  const std::pair<const char*, int> depths[] = {{"uop", d->log_uop_depth},
                                                {"inp", d->log_inp_depth},
                                                {"wgt", d->log_wgt_depth},
                                                {"acc", d->log_acc_depth}};
  for (const auto& [name, log_depth] : depths) {
    if (log_depth < 1 || log_depth > 16) {
      *err = Cat(name, " buffer depth 2^", log_depth, " must be in [2, 2^16]");
      return false;
    }
  }
  d->uop_depth = uint64_t(1) << d->log_uop_depth;
  d->inp_depth = uint64_t(1) << d->log_inp_depth;
  d->wgt_depth = uint64_t(1) << d->log_wgt_depth;
  d->acc_depth = uint64_t(1) << d->log_acc_depth;
  d->bus_bytes = (uint64_t(1) << c.log_bus_width) / 8;
  d->dma_latency = c.dma_latency;
  d->gemm_depth = c.gemm_pipeline_depth;
  d->alu_depth = c.alu_pipeline_depth;
  d->gemm_ii = c.gemm_ii;
  d->alu_ii = c.alu_ii;
  d->cmd_depth = c.cmd_queue_depth;
  d->dep_depth = c.dep_queue_depth;

  const FieldList header = {{F_OPCODE, 3}, {F_POP_PREV, 1}, {F_POP_NEXT, 1}, {F_PUSH_PREV, 1},
                            {F_PUSH_NEXT, 1}};
  FieldList mem = header;
  mem.insert(mem.end(), {{F_MEMORY_TYPE, 3}, {F_SRAM_BASE, 16}, {F_DRAM_BASE, 32},
                         {F_Y_SIZE, 16}, {F_X_SIZE, 16}, {F_X_STRIDE, 16}, {F_Y_PAD_0, 4},
                         {F_Y_PAD_1, 4}, {F_X_PAD_0, 4}, {F_X_PAD_1, 4}});
  FieldList loop = header;
  loop.insert(loop.end(), {{F_RESET, 1}, {F_UOP_BGN, d->log_uop_depth},
                           {F_UOP_END, d->log_uop_depth + 1}, {F_ITER_OUT, 14}, {F_ITER_IN, 14},
                           {F_DST_FO, d->log_acc_depth}, {F_DST_FI, d->log_acc_depth}});
  FieldList gemm = loop;
  gemm.insert(gemm.end(), {{F_SRC_FO, d->log_inp_depth}, {F_SRC_FI, d->log_inp_depth},
                           {F_WGT_FO, d->log_wgt_depth}, {F_WGT_FI, d->log_wgt_depth}});
  FieldList alu = loop;  // ALU source factors index the accumulator (hw_spec.h)
  alu.insert(alu.end(), {{F_SRC_FO, d->log_acc_depth}, {F_SRC_FI, d->log_acc_depth},
                         {F_ALU_OPCODE, 3}, {F_USE_IMM, 1}, {F_IMM, 16}});
  const FieldList uop = {{F_UOP_DST, d->log_acc_depth},
                         {F_UOP_SRC, std::max(d->log_acc_depth, d->log_inp_depth)},
                         {F_UOP_WGT, d->log_wgt_depth}};
  return Pack(mem, 64, 128, "LOAD/STORE", &d->mem, err) &&
         Pack(gemm, 64, 128, "GEMM", &d->gemm, err) && Pack(alu, 64, 128, "ALU", &d->alu, err) &&
         Pack(header, 64, 128, "FINISH", &d->header, err) &&
         Pack(uop, 32, 32, "micro-op", &d->uop, err);
}

// ---- decoding ----

struct Words {
  uint64_t w[2];
};

Words ReadWords(const uint8_t* p) {
  Words r{{0, 0}};
  for (int i = 0; i < 16; ++i) r.w[i / 8] |= uint64_t(p[i]) << (8 * (i % 8));
  return r;
}

int64_t Get(const Words& words, const Field& f) {
  if (f.offset < 0 || f.width == 0) return 0;
  uint64_t v = words.w[f.offset / 64] >> (f.offset % 64);
  if (f.width < 64) v &= (uint64_t(1) << f.width) - 1;
  if (f.is_signed && f.width < 64 && (v >> (f.width - 1))) v |= ~((uint64_t(1) << f.width) - 1);
  return int64_t(v);
}

struct Insn {
  int opcode = 0;
  bool pop_prev = false, pop_next = false, push_prev = false, push_next = false;
  int memory_type = 0;
  uint64_t sram_base = 0, dram_base = 0, y_size = 0, x_size = 0, x_stride = 0;
  uint64_t y_pad_0 = 0, y_pad_1 = 0, x_pad_0 = 0, x_pad_1 = 0;
  bool reset = false;
  uint64_t uop_bgn = 0, uop_end = 0, iter_out = 0, iter_in = 0;
  uint64_t dst_fo = 0, dst_fi = 0, src_fo = 0, src_fi = 0, wgt_fo = 0, wgt_fi = 0;
  int alu_opcode = 0;
  bool use_imm = false;
  int64_t imm = 0;
  int engine = kComputeEngine;
  bool is_nop() const { return (opcode == kLoad || opcode == kStore) && x_size == 0; }
};

// Decodes fields; returns false only for an unknown opcode.
bool DecodeFields(const Config& cfg, const uint8_t* bytes, vta_sim_fields* f) {
  std::memset(f, 0, sizeof(*f));
  const Words w = ReadWords(bytes);
  const Layout* lay = nullptr;
  f->opcode = Get(w, cfg.header[F_OPCODE]);
  switch (f->opcode) {
    case kLoad: case kStore: lay = &cfg.mem; break;
    case kGemm: lay = &cfg.gemm; break;
    case kAlu: lay = &cfg.alu; break;
    case kFinish: lay = &cfg.header; break;
    default: return false;
  }
  const Layout& L = *lay;
  f->pop_prev = Get(w, L[F_POP_PREV]);
  f->pop_next = Get(w, L[F_POP_NEXT]);
  f->push_prev = Get(w, L[F_PUSH_PREV]);
  f->push_next = Get(w, L[F_PUSH_NEXT]);
  f->memory_type = Get(w, L[F_MEMORY_TYPE]);
  f->sram_base = Get(w, L[F_SRAM_BASE]);
  f->dram_base = Get(w, L[F_DRAM_BASE]);
  f->y_size = Get(w, L[F_Y_SIZE]);
  f->x_size = Get(w, L[F_X_SIZE]);
  f->x_stride = Get(w, L[F_X_STRIDE]);
  f->y_pad_0 = Get(w, L[F_Y_PAD_0]);
  f->y_pad_1 = Get(w, L[F_Y_PAD_1]);
  f->x_pad_0 = Get(w, L[F_X_PAD_0]);
  f->x_pad_1 = Get(w, L[F_X_PAD_1]);
  f->reset = Get(w, L[F_RESET]);
  f->uop_bgn = Get(w, L[F_UOP_BGN]);
  f->uop_end = Get(w, L[F_UOP_END]);
  f->iter_out = Get(w, L[F_ITER_OUT]);
  f->iter_in = Get(w, L[F_ITER_IN]);
  f->dst_factor_out = Get(w, L[F_DST_FO]);
  f->dst_factor_in = Get(w, L[F_DST_FI]);
  f->src_factor_out = Get(w, L[F_SRC_FO]);
  f->src_factor_in = Get(w, L[F_SRC_FI]);
  f->wgt_factor_out = Get(w, L[F_WGT_FO]);
  f->wgt_factor_in = Get(w, L[F_WGT_FI]);
  f->alu_opcode = Get(w, L[F_ALU_OPCODE]);
  f->use_imm = Get(w, L[F_USE_IMM]);
  f->imm = Get(w, L[F_IMM]);
  return true;
}

std::string Describe(const Insn& in) {
  switch (in.opcode) {
    case kLoad:
      if (in.is_nop()) return "NOP";
      return Cat("LOAD ", in.memory_type <= kAcc8 ? kMemName[in.memory_type] : "?");
    case kStore: return in.is_nop() ? "NOP" : "STORE";
    case kGemm: return in.reset ? "GEMM reset" : "GEMM";
    case kAlu: return Cat("ALU ", in.alu_opcode <= kMul ? kAluName[in.alu_opcode] : "?");
    default: return "FINISH";
  }
}

// ---- value helpers ----

inline int64_t Wrap(int64_t v, int bits) {
  if (bits >= 64) return v;
  const int sh = 64 - bits;
  return int64_t(uint64_t(v) << sh) >> sh;
}

inline int64_t ReadInt(const uint8_t* p, int bits) {
  switch (bits) {
    case 8: return int8_t(p[0]);
    case 16: return int16_t(uint16_t(p[0] | (p[1] << 8)));
    default: {
      uint64_t u = 0;
      for (int i = 0; i < bits / 8; ++i) u |= uint64_t(p[i]) << (8 * i);
      return Wrap(int64_t(u), bits);
    }
  }
}

inline void WriteInt(uint8_t* p, int64_t v, int bits) {  // keeps the low `bits` (truncation)
  for (int i = 0; i < bits / 8; ++i) p[i] = uint8_t(uint64_t(v) >> (8 * i));
}

// ---- the machine ----

class Sim {
 public:
  Sim(const Config& cfg, const vta_sim_options& opt, const uint8_t* insn_bytes, uint64_t n,
      uint8_t* dram, uint64_t dram_bytes, vta_sim_stats* st)
      : c_(cfg), opt_(opt), raw_(insn_bytes), n_(n), dram_(dram), dram_bytes_(dram_bytes),
        st_(st) {
    max_uop_iters_ = opt.max_uop_iters ? opt.max_uop_iters : kDefaultMaxUopIters;
  }

  void Run() {
    DecodeAll();
    Allocate();
    for (uint64_t i = 0; i < n_; ++i) {
      const int e = insns_[i].engine;
      pos_in_engine_[i] = lists_[e].size();
      lists_[e].push_back(i);
    }
    dispatch_.assign(n_, 0);
    AdvanceFetch();
    while (!finished_) Step();
  }

  uint64_t Now() const {
    uint64_t t = 0;
    for (int e = 0; e < kNumEngines; ++e) t = std::max(t, free_at_[e]);
    return t;
  }

 private:
  // -- static checks: every instruction decoded and checked before anything runs.
  void DecodeAll() {
    if (n_ == 0) Fail(VTA_SIM_ERR_PROGRAM, -1, "empty program");
    if (n_ > kMaxInsns) {
      Fail(VTA_SIM_ERR_PROGRAM, -1, Cat("program of ", n_, " instructions exceeds ", kMaxInsns));
    }
    insns_.resize(n_);
    pos_in_engine_.resize(n_);
    for (uint64_t i = 0; i < n_; ++i) {
      vta_sim_fields f;
      if (!DecodeFields(c_, raw_ + i * kInsnBytes, &f)) {
        Fail(VTA_SIM_ERR_DECODE, i, Cat("insn #", i, ": unknown opcode ", f.opcode));
      }
      Insn& in = insns_[i];
      in.opcode = int(f.opcode);
      in.pop_prev = f.pop_prev;
      in.pop_next = f.pop_next;
      in.push_prev = f.push_prev;
      in.push_next = f.push_next;
      in.memory_type = int(f.memory_type);
      in.sram_base = f.sram_base;
      in.dram_base = f.dram_base;
      in.y_size = f.y_size;
      in.x_size = f.x_size;
      in.x_stride = f.x_stride;
      in.y_pad_0 = f.y_pad_0;
      in.y_pad_1 = f.y_pad_1;
      in.x_pad_0 = f.x_pad_0;
      in.x_pad_1 = f.x_pad_1;
      in.reset = f.reset;
      in.uop_bgn = f.uop_bgn;
      in.uop_end = f.uop_end;
      in.iter_out = f.iter_out;
      in.iter_in = f.iter_in;
      in.dst_fo = f.dst_factor_out;
      in.dst_fi = f.dst_factor_in;
      in.src_fo = f.src_factor_out;
      in.src_fi = f.src_factor_in;
      in.wgt_fo = f.wgt_factor_out;
      in.wgt_fi = f.wgt_factor_in;
      in.alu_opcode = int(f.alu_opcode);
      in.use_imm = f.use_imm;
      in.imm = f.imm;
      Check(in, i);
    }
    if (insns_[n_ - 1].opcode != kFinish) {
      Fail(VTA_SIM_ERR_PROGRAM, n_ - 1, "program does not end with FINISH");
    }
  }

  void Check(Insn& in, uint64_t i) {
    const std::string where = Cat("insn #", i, " (", Describe(in), "): ");
    if (in.opcode == kLoad || in.opcode == kStore) {
      if (in.memory_type > kAcc8) {
        Fail(VTA_SIM_ERR_DECODE, i, Cat("insn #", i, ": unknown memory type ", in.memory_type));
      }
      if (in.opcode == kStore) {
        in.engine = kStoreEngine;
      } else {
        in.engine = (in.memory_type == kInp || in.memory_type == kWgt) ? kLoadEngine
                                                                        : kComputeEngine;
      }
      if (!in.is_nop()) {
        if (in.opcode == kLoad && in.memory_type == kOut) {
          Fail(VTA_SIM_ERR_DECODE, i, where + "LOAD cannot target memory type OUT");
        }
        if (in.opcode == kStore && in.memory_type != kOut) {
          Fail(VTA_SIM_ERR_DECODE, i,
               where + Cat("STORE must use memory type OUT, got ", kMemName[in.memory_type]));
        }
        if (in.opcode == kStore && (in.y_pad_0 || in.y_pad_1 || in.x_pad_0 || in.x_pad_1)) {
          Fail(VTA_SIM_ERR_DECODE, i, where + "STORE cannot pad");
        }
      }
    } else if (in.opcode == kGemm || in.opcode == kAlu) {
      in.engine = kComputeEngine;
      if (in.uop_bgn > in.uop_end) {
        Fail(VTA_SIM_ERR_DECODE, i,
             where + Cat("uop_bgn ", in.uop_bgn, " > uop_end ", in.uop_end));
      }
      if (in.uop_end > c_.uop_depth) {
        Fail(VTA_SIM_ERR_SRAM, i,
             where + Cat("micro-op range [", in.uop_bgn, ", ", in.uop_end,
                         ") exceeds the micro-op buffer depth ", c_.uop_depth));
      }
      if (in.opcode == kAlu) {
        if (in.alu_opcode > kMul) {
          Fail(VTA_SIM_ERR_DECODE, i, Cat("insn #", i, ": unknown ALU opcode ", in.alu_opcode));
        }
        if (in.reset) Fail(VTA_SIM_ERR_DECODE, i, where + "ALU reset bit must be 0");
      }
    } else {  // FINISH
      in.engine = kComputeEngine;
      if (in.pop_prev || in.pop_next || in.push_prev || in.push_next) {
        Fail(VTA_SIM_ERR_DECODE, i,
             where + "FINISH cannot carry dependency flags (synchronize with a NOP before it)");
      }
      if (i + 1 != n_) {
        Fail(VTA_SIM_ERR_PROGRAM, i,
             Cat("FINISH at insn #", i, " is followed by ", n_ - i - 1, " instruction(s)"));
      }
    }
    if (in.engine == kLoadEngine && (in.pop_prev || in.push_prev)) {
      Fail(VTA_SIM_ERR_DECODE, i, where + "load-stage instruction cannot pop/push 'prev'");
    }
    if (in.engine == kStoreEngine && (in.pop_next || in.push_next)) {
      Fail(VTA_SIM_ERR_DECODE, i, where + "store-stage instruction cannot pop/push 'next'");
    }
  }

  void Allocate() {
    uop_.assign(c_.uop_depth, 0);
    uop_valid_.assign(c_.uop_depth, 0);
    narrow_ = c_.inp_bits == 8 && c_.wgt_bits == 8;
    const uint64_t n_inp = c_.inp_depth * c_.batch * c_.block_in;
    const uint64_t n_wgt = c_.wgt_depth * c_.block_out * c_.block_in;
    if (narrow_) {
      inp16_.assign(n_inp, 0);
      wgt16_.assign(n_wgt, 0);
    } else {
      inp64_.assign(n_inp, 0);
      wgt64_.assign(n_wgt, 0);
    }
    acc_.assign(c_.acc_depth * c_.batch * c_.block_out, 0);
  }

  // -- token plumbing
  int Pops(const Insn& in, int out[2]) const {
    int n = 0;
    switch (in.engine) {
      case kLoadEngine: if (in.pop_next) out[n++] = kG2L; break;
      case kComputeEngine:
        if (in.pop_prev) out[n++] = kL2G;
        if (in.pop_next) out[n++] = kS2G;
        break;
      default: if (in.pop_prev) out[n++] = kG2S; break;
    }
    return n;
  }

  int Pushes(const Insn& in, int out[2]) const {
    int n = 0;
    switch (in.engine) {
      case kLoadEngine: if (in.push_next) out[n++] = kL2G; break;
      case kComputeEngine:
        if (in.push_prev) out[n++] = kG2L;
        if (in.push_next) out[n++] = kG2S;
        break;
      default: if (in.push_prev) out[n++] = kS2G; break;
    }
    return n;
  }

  // Fetch dispatches instructions in program order into the per-engine command queues; a
  // full queue stalls it until that engine starts (dequeues) an instruction.
  void AdvanceFetch() {
    const uint64_t per_insn = (kInsnBytes + c_.bus_bytes - 1) / c_.bus_bytes;
    while (fetched_ < n_) {
      const uint64_t i = fetched_;
      const int e = insns_[i].engine;
      const uint64_t k = pos_in_engine_[i];
      uint64_t slot = 0;
      if (k >= c_.cmd_depth) {
        const uint64_t j = k - c_.cmd_depth;
        if (j >= start_times_[e].size()) return;  // queue full
        slot = start_times_[e][j];
      }
      const uint64_t t = std::max(i == 0 ? c_.dma_latency + per_insn : fetch_t_ + per_insn, slot);
      dispatch_[i] = t;
      fetch_t_ = t;
      ++fetched_;
      st_->insn_load_nbytes += kInsnBytes;
    }
  }

  void Step() {
    int best_e = -1;
    uint64_t best_s = 0, best_i = 0;
    for (int e = 0; e < kNumEngines; ++e) {
      if (head_[e] >= lists_[e].size() || pending_[e]) continue;
      const uint64_t i = lists_[e][head_[e]];
      if (i >= fetched_) continue;
      if (opt_.force_serial && (i != executed_ || AnyPending())) continue;
      uint64_t s = std::max(free_at_[e], dispatch_[i]);
      int q[2];
      const int np = Pops(insns_[i], q);
      bool ready = true;
      for (int k = 0; k < np; ++k) {
        if (queues_[q[k]].empty()) { ready = false; break; }
        s = std::max(s, queues_[q[k]].front());
      }
      if (!ready) continue;
      if (opt_.force_serial) s = std::max(s, serial_t_);
      if (best_e < 0 || s < best_s || (s == best_s && i < best_i)) {
        best_e = e;
        best_s = s;
        best_i = i;
      }
    }
    if (best_e < 0) Deadlock();
    Execute(best_e, best_i, best_s);
  }

  bool AnyPending() const { return pending_[0] || pending_[1] || pending_[2]; }

  void Execute(int e, uint64_t i, uint64_t s) {
    const Insn& in = insns_[i];
    int q[2];
    const int np = Pops(in, q);
    for (int k = 0; k < np; ++k) {
      queues_[q[k]].pop_front();
      last_pop_[q[k]] = s;
    }
    if (in.opcode == kFinish) CheckFinish(i, s);
    const uint64_t cost = std::max<uint64_t>(1, Exec(in, i));
    const uint64_t c = s + cost;
    st_->stall[e] += s - free_at_[e];
    st_->busy[e] += cost;
    st_->n_insns[e] += 1;
    if (opt_.trace) {
      opt_.trace[2 * i] = s;
      opt_.trace[2 * i + 1] = c;
    }
    start_times_[e].push_back(s);
    ++head_[e];
    ++executed_;
    free_at_[e] = c;
    done_at_[e] = c;
    const int npush = Pushes(in, q);
    for (int k = 0; k < npush; ++k) {
      if (queues_[q[k]].size() < c_.dep_depth) {
        queues_[q[k]].push_back(c);
      } else {
        pending_[e] |= 1u << q[k];
      }
    }
    if (in.opcode == kFinish) {
      st_->cycles = c;
      finished_ = true;
      return;
    }
    AdvanceFetch();
    ResolvePending();
    serial_t_ = free_at_[e];
  }

  // A push blocked on a full queue completes once the consumer pops from that queue.
  void ResolvePending() {
    for (int e = 0; e < kNumEngines; ++e) {
      if (!pending_[e]) continue;
      for (int q = 0; q < kNumQueues; ++q) {
        if ((pending_[e] & (1u << q)) && queues_[q].size() < c_.dep_depth) {
          const uint64_t t = std::max(done_at_[e], last_pop_[q]);
          queues_[q].push_back(t);
          free_at_[e] = std::max(free_at_[e], t);
          pending_[e] &= ~(1u << q);
        }
      }
      if (!pending_[e]) {
        st_->stall[e] += free_at_[e] - done_at_[e];
        if (opt_.force_serial) serial_t_ = std::max(serial_t_, free_at_[e]);
      }
    }
  }

  void CheckFinish(uint64_t i, uint64_t s) {
    for (int e = 0; e < kNumEngines; ++e) {
      if (e == kComputeEngine) continue;
      if (head_[e] < lists_[e].size()) {
        const std::string why = Blocked(e);
        Fail(VTA_SIM_ERR_FINISH, i,
             Cat("FINISH at cycle ", s, " while the ", kEngineName[e], " engine still has ",
                 lists_[e].size() - head_[e], " unexecuted instruction(s) (",
                 why.empty() ? Cat("next: insn #", lists_[e][head_[e]]) : why, "); missing ",
                 kEngineName[e], "->compute synchronization before FINISH"));
      }
      if (pending_[e] || free_at_[e] > s) {
        Fail(VTA_SIM_ERR_FINISH, i,
             Cat("FINISH at cycle ", s, " while the ", kEngineName[e],
                 " engine is busy until cycle ", free_at_[e], "; missing ", kEngineName[e],
                 "->compute synchronization before FINISH"));
      }
    }
    std::string left;
    for (int q = 0; q < kNumQueues; ++q) {
      if (!queues_[q].empty()) {
        left += Cat(left.empty() ? "" : ", ", kQueueName[q], ": ", queues_[q].size());
      }
    }
    if (!left.empty()) {
      Fail(VTA_SIM_ERR_FINISH, i, "dependency tokens left in queues at FINISH: " + left +
                                      " (every push needs a matching pop)");
    }
  }

  // Why engine e cannot start its next instruction ("" if it could).
  std::string Blocked(int e) const {
    if (pending_[e]) {
      std::string msg;
      for (int q = 0; q < kNumQueues; ++q) {
        if (pending_[e] & (1u << q)) {
          const uint64_t last = lists_[e][head_[e] - 1];
          msg += Cat(msg.empty() ? "" : "; ", kEngineName[e], " engine: insn #", last, " (",
                     Describe(insns_[last]), ") is blocked pushing to the full token queue ",
                     kQueueName[q], " (depth ", c_.dep_depth, ")");
        }
      }
      return msg;
    }
    if (head_[e] >= lists_[e].size()) return "";
    const uint64_t i = lists_[e][head_[e]];
    const std::string who = Cat(kEngineName[e], " engine: insn #", i, " (", Describe(insns_[i]), ")");
    if (i >= fetched_) {
      return Cat(who, " is not fetched: fetch is stalled at insn #", fetched_, " because the ",
                 kEngineName[insns_[fetched_].engine], " command queue is full (depth ",
                 c_.cmd_depth, ")");
    }
    // Tokens that unexecuted instructions would still push, per queue.
    uint64_t future[kNumQueues] = {0, 0, 0, 0};
    for (int f = 0; f < kNumEngines; ++f) {
      for (uint64_t k = head_[f]; k < lists_[f].size(); ++k) {
        int q[2];
        const int np = Pushes(insns_[lists_[f][k]], q);
        for (int j = 0; j < np; ++j) ++future[q[j]];
      }
    }
    std::string msg;
    int q[2];
    const int np = Pops(insns_[i], q);
    for (int k = 0; k < np; ++k) {
      if (queues_[q[k]].empty()) {
        msg += Cat(msg.empty() ? "" : "; ", who, " waits for a token on ", kQueueName[q[k]],
                   ", which is empty", future[q[k]] ? "" : " and no remaining instruction pushes it");
      }
    }
    if (msg.empty() && opt_.force_serial && i != executed_) {
      msg = Cat(who, " waits for insn #", executed_, " (force_serial)");
    }
    return msg;
  }

  [[noreturn]] void Deadlock() {
    std::string msg = Cat("deadlock at cycle ", Now(), ": no engine can make progress");
    int64_t first = -1;
    for (int e = 0; e < kNumEngines; ++e) {
      const std::string why = Blocked(e);
      if (why.empty()) continue;
      msg += "; " + why;
      const uint64_t i = pending_[e] ? lists_[e][head_[e] - 1] : lists_[e][head_[e]];
      if (first < 0 || int64_t(i) < first) first = int64_t(i);
    }
    Fail(VTA_SIM_ERR_DEADLOCK, first, msg);
  }

  // -- functional execution; returns the cycle cost.
  uint64_t Exec(const Insn& in, uint64_t i) {
    switch (in.opcode) {
      case kLoad: st_->n_load += !in.is_nop(); st_->n_nop += in.is_nop(); return ExecLoad(in, i);
      case kStore: st_->n_store += !in.is_nop(); st_->n_nop += in.is_nop(); return ExecStore(in, i);
      case kGemm: ++st_->n_gemm; return ExecLoop(in, i);
      case kAlu: ++st_->n_alu; return ExecLoop(in, i);
      default: ++st_->n_finish; return 1;
    }
  }

  uint64_t DmaCycles(uint64_t bytes) const {
    return c_.dma_latency + (bytes + c_.bus_bytes - 1) / c_.bus_bytes;
  }

  void CheckDram(const Insn& in, uint64_t i, uint64_t elem_bytes, const char* what) const {
    // Rows start at dram_base + y * x_stride; the last row ends furthest.
    const uint64_t end = in.dram_base + (in.y_size - 1) * in.x_stride + in.x_size;
    if (end * elem_bytes > dram_bytes_) {
      Fail(VTA_SIM_ERR_DRAM, i,
           Cat("insn #", i, " (", what, "): DRAM elements [", in.dram_base, ", ", end, ") of ",
               elem_bytes, " B = bytes [", in.dram_base * elem_bytes, ", ", end * elem_bytes,
               ") exceed the DRAM image of ", dram_bytes_, " B"));
    }
  }

  uint64_t ExecLoad(const Insn& in, uint64_t i) {
    if (in.is_nop()) return 1;
    const std::string what = Describe(in);
    uint64_t depth = 0, eb = 0, lanes = 0;
    int bits = 0;
    switch (in.memory_type) {
      case kUop: depth = c_.uop_depth; eb = kUopBytes; break;
      case kInp: depth = c_.inp_depth; eb = c_.inp_elem_bytes; lanes = c_.batch * c_.block_in;
        bits = c_.inp_bits; break;
      case kWgt: depth = c_.wgt_depth; eb = c_.wgt_elem_bytes; lanes = c_.block_out * c_.block_in;
        bits = c_.wgt_bits; break;
      case kAcc: depth = c_.acc_depth; eb = c_.acc_elem_bytes; lanes = c_.batch * c_.block_out;
        bits = c_.acc_bits; break;
      default: depth = c_.acc_depth; eb = c_.out_elem_bytes; lanes = c_.batch * c_.block_out;
        bits = c_.out_bits; break;  // ACC_8BIT: narrow values sign-extended into acc
    }
    const uint64_t xt = in.x_pad_0 + in.x_size + in.x_pad_1;
    const uint64_t yt = in.y_pad_0 + in.y_size + in.y_pad_1;
    if (in.sram_base + xt * yt > depth) {
      Fail(VTA_SIM_ERR_SRAM, i,
           Cat("insn #", i, " (", what, "): SRAM range [", in.sram_base, ", ",
               in.sram_base + xt * yt, ") (", yt, " rows x ", xt,
               " elements incl. padding) exceeds the ", kMemName[in.memory_type],
               " buffer depth ", depth));
    }
    if (in.y_size > 0) CheckDram(in, i, eb, what.c_str());
    uint64_t sram = in.sram_base;
    auto put = [&](const uint8_t* src) {  // src == nullptr: zero padding
      switch (in.memory_type) {
        case kUop: {
          uint32_t u = 0;
          if (src) for (int b = 0; b < 4; ++b) u |= uint32_t(src[b]) << (8 * b);
          uop_[sram] = u;
          uop_valid_[sram] = 1;
          break;
        }
        case kInp: case kWgt: {
          const bool is_inp = in.memory_type == kInp;
          if (narrow_) {
            int16_t* dst = (is_inp ? inp16_.data() : wgt16_.data()) + sram * lanes;
            for (uint64_t l = 0; l < lanes; ++l) dst[l] = src ? int8_t(src[l]) : 0;
          } else {
            int64_t* dst = (is_inp ? inp64_.data() : wgt64_.data()) + sram * lanes;
            for (uint64_t l = 0; l < lanes; ++l) dst[l] = src ? ReadInt(src + l * (bits / 8), bits) : 0;
          }
          break;
        }
        default: {
          int64_t* dst = acc_.data() + sram * lanes;
          for (uint64_t l = 0; l < lanes; ++l) dst[l] = src ? ReadInt(src + l * (bits / 8), bits) : 0;
        }
      }
      ++sram;
    };
    for (uint64_t k = 0; k < in.y_pad_0 * xt; ++k) put(nullptr);
    for (uint64_t y = 0; y < in.y_size; ++y) {
      for (uint64_t k = 0; k < in.x_pad_0; ++k) put(nullptr);
      const uint8_t* row = dram_ + (in.dram_base + y * in.x_stride) * eb;
      for (uint64_t x = 0; x < in.x_size; ++x) put(row + x * eb);
      for (uint64_t k = 0; k < in.x_pad_1; ++k) put(nullptr);
    }
    for (uint64_t k = 0; k < in.y_pad_1 * xt; ++k) put(nullptr);
    const uint64_t bytes = in.x_size * in.y_size * eb;
    switch (in.memory_type) {
      case kUop: st_->uop_load_nbytes += bytes; break;
      case kInp: st_->inp_load_nbytes += bytes; break;
      case kWgt: st_->wgt_load_nbytes += bytes; break;
      default: st_->acc_load_nbytes += bytes; break;
    }
    return DmaCycles(bytes) + (xt * yt - in.x_size * in.y_size);
  }

  uint64_t ExecStore(const Insn& in, uint64_t i) {
    if (in.is_nop()) return 1;
    const uint64_t n = in.x_size * in.y_size;
    if (in.sram_base + n > c_.acc_depth) {
      Fail(VTA_SIM_ERR_SRAM, i,
           Cat("insn #", i, " (STORE): accumulator range [", in.sram_base, ", ", in.sram_base + n,
               ") exceeds the buffer depth ", c_.acc_depth));
    }
    const uint64_t eb = c_.out_elem_bytes;
    if (in.y_size > 0) CheckDram(in, i, eb, "STORE");
    const uint64_t lanes = uint64_t(c_.batch) * c_.block_out;
    const int ob = c_.out_bits / 8;
    for (uint64_t y = 0; y < in.y_size; ++y) {
      for (uint64_t x = 0; x < in.x_size; ++x) {
        const int64_t* src = acc_.data() + (in.sram_base + y * in.x_size + x) * lanes;
        uint8_t* dst = dram_ + (in.dram_base + y * in.x_stride + x) * eb;
        for (uint64_t l = 0; l < lanes; ++l) WriteInt(dst + l * ob, src[l], c_.out_bits);
      }
    }
    st_->out_store_nbytes += n * eb;
    return DmaCycles(n * eb);
  }

  // Largest index `base + o*f_out + i*f_in` over the loop nest, or fail naming the buffer.
  void CheckIndex(const Insn& in, uint64_t i, const char* buf, uint64_t max_base, uint64_t f_out,
                  uint64_t f_in, uint64_t depth, const char* field) const {
    const uint64_t top = max_base + (in.iter_out - 1) * f_out + (in.iter_in - 1) * f_in;
    if (top >= depth) {
      Fail(VTA_SIM_ERR_SRAM, i,
           Cat("insn #", i, " (", Describe(in), "): ", buf, " index ", top, " out of range [0, ",
               depth, ") (max micro-op ", field, "=", max_base, " + (iter_out-1)=",
               in.iter_out - 1, " * ", f_out, " + (iter_in-1)=", in.iter_in - 1, " * ", f_in,
               ")"));
    }
  }

  uint64_t ExecLoop(const Insn& in, uint64_t i) {
    const bool gemm = in.opcode == kGemm;
    const uint64_t n_uops = in.uop_end - in.uop_bgn;
    const uint64_t iters = in.iter_out * in.iter_in * n_uops;
    const uint64_t cost = gemm ? c_.gemm_depth + c_.gemm_ii * iters : c_.alu_depth + c_.alu_ii * iters;
    if (iters == 0) return cost;
    uop_iters_ += iters;
    if (uop_iters_ > max_uop_iters_) {
      Fail(VTA_SIM_ERR_LIMIT, i,
           Cat("insn #", i, ": work limit exceeded (", uop_iters_,
               " GEMM/ALU micro-op iterations > max_uop_iters ", max_uop_iters_, ")"));
    }
    uint64_t max_dst = 0, max_src = 0, max_wgt = 0;
    kernel_.clear();
    for (uint64_t u = in.uop_bgn; u < in.uop_end; ++u) {
      if (!uop_valid_[u]) {
        Fail(VTA_SIM_ERR_SRAM, i,
             Cat("insn #", i, " (", Describe(in), ") uses micro-op ", u, " which was never loaded"));
      }
      const Words w{{uop_[u], 0}};
      const DecodedUop d{uint64_t(Get(w, c_.uop[F_UOP_DST])), uint64_t(Get(w, c_.uop[F_UOP_SRC])),
                         uint64_t(Get(w, c_.uop[F_UOP_WGT]))};
      kernel_.push_back(d);
      max_dst = std::max(max_dst, d.dst);
      max_src = std::max(max_src, d.src);
      max_wgt = std::max(max_wgt, d.wgt);
    }
    CheckIndex(in, i, "accumulator", max_dst, in.dst_fo, in.dst_fi, c_.acc_depth, "dst");
    if (gemm && !in.reset) {
      CheckIndex(in, i, "input", max_src, in.src_fo, in.src_fi, c_.inp_depth, "src");
      CheckIndex(in, i, "weight", max_wgt, in.wgt_fo, in.wgt_fi, c_.wgt_depth, "wgt");
    } else if (!gemm && !in.use_imm) {
      CheckIndex(in, i, "accumulator (ALU source)", max_src, in.src_fo, in.src_fi, c_.acc_depth,
                 "src");
    }
    const uint64_t lanes = uint64_t(c_.batch) * c_.block_out;
    uint64_t prev1 = UINT64_MAX, prev2 = UINT64_MAX;
    for (uint64_t o = 0; o < in.iter_out; ++o) {
      for (uint64_t x = 0; x < in.iter_in; ++x) {
        for (const DecodedUop& uop : kernel_) {
          const uint64_t d = uop.dst + o * in.dst_fo + x * in.dst_fi;
          const uint64_t s = uop.src + o * in.src_fo + x * in.src_fi;
          int64_t* acc = acc_.data() + d * lanes;
          if (gemm && in.reset) {
            std::fill(acc, acc + lanes, 0);
            continue;
          }
          if (d == prev1 || d == prev2) {
            ++st_->acc_raw_hazards;
            if (opt_.strict_hazards) {
              Fail(VTA_SIM_ERR_HAZARD, i,
                   Cat("insn #", i, " (", Describe(in), "): accumulator row ", d,
                       " is written again within 2 micro-ops (pipeline RAW hazard)"));
            }
          }
          prev2 = prev1;
          prev1 = d;
          if (gemm) {
            const uint64_t wi = uop.wgt + o * in.wgt_fo + x * in.wgt_fi;
            const uint64_t xo = s * c_.batch * c_.block_in, wo = wi * c_.block_out * c_.block_in;
            if (narrow_) {
              Gemm<int16_t, int32_t>(acc, inp16_.data() + xo, wgt16_.data() + wo);
            } else {
              Gemm<int64_t, uint64_t>(acc, inp64_.data() + xo, wgt64_.data() + wo);
            }
          } else {
            Alu(in, acc, in.use_imm ? nullptr : acc_.data() + s * lanes, lanes);
          }
        }
      }
    }
    if (gemm) {
      (in.reset ? st_->gemm_reset_counter : st_->gemm_counter) += iters;
    } else {
      st_->alu_counter += iters;
    }
    return cost;
  }

  // acc[b][j] += sum_k inp[s][b][k] * wgt[w][j][k], wrapping at the accumulator width.
  // 8-bit operands are held as int16 so the int32 dot product (exact: |sum| <= 64 * 2^14)
  // vectorizes as a multiply-add; wider operands use int64 products summed modulo 2^64.
  template <typename T, typename SumT>
  void Gemm(int64_t* acc, const T* x, const T* wt) {
    const int bi = c_.block_in, bo = c_.block_out;
    for (int b = 0; b < c_.batch; ++b) {
      const T* xr = x + b * bi;
      for (int j = 0; j < bo; ++j) {
        const T* wr = wt + j * bi;
        SumT sum = 0;
        for (int k = 0; k < bi; ++k) sum += SumT(xr[k]) * SumT(wr[k]);
        int64_t& a = acc[b * bo + j];
        a = Wrap(int64_t(uint64_t(a) + uint64_t(int64_t(sum))), c_.acc_bits);
      }
    }
  }

  void Alu(const Insn& in, int64_t* dst, const int64_t* src, uint64_t lanes) {
    const int bits = c_.acc_bits;
    const int64_t imm = Wrap(in.imm, bits);
    for (uint64_t l = 0; l < lanes; ++l) {
      const int64_t a = dst[l];
      const int64_t b = in.use_imm ? imm : src[l];
      int64_t r;
      switch (in.alu_opcode) {
        case kMin: r = std::min(a, b); break;
        case kMax: r = std::max(a, b); break;
        case kAdd: r = Wrap(int64_t(uint64_t(a) + uint64_t(b)), bits); break;
        case kMul: r = Wrap(int64_t(uint64_t(a) * uint64_t(b)), bits); break;
        default: {  // SHR
          if (b >= 0) {
            r = a >> std::min<int64_t>(b, 63);
          } else {
            const uint64_t left = 0 - uint64_t(b);
            r = left >= uint64_t(bits) ? 0 : Wrap(int64_t(uint64_t(a) << left), bits);
          }
        }
      }
      dst[l] = r;
    }
  }

  const Config& c_;
  const vta_sim_options& opt_;
  const uint8_t* raw_;
  uint64_t n_;
  uint8_t* dram_;
  uint64_t dram_bytes_;
  vta_sim_stats* st_;
  uint64_t max_uop_iters_ = 0, uop_iters_ = 0;

  std::vector<Insn> insns_;
  std::vector<uint64_t> pos_in_engine_, dispatch_;
  std::vector<uint64_t> lists_[kNumEngines], start_times_[kNumEngines];
  uint64_t head_[kNumEngines] = {0, 0, 0};
  uint64_t free_at_[kNumEngines] = {0, 0, 0};
  uint64_t done_at_[kNumEngines] = {0, 0, 0};
  unsigned pending_[kNumEngines] = {0, 0, 0};
  std::deque<uint64_t> queues_[kNumQueues];
  uint64_t last_pop_[kNumQueues] = {0, 0, 0, 0};
  uint64_t fetched_ = 0, fetch_t_ = 0, executed_ = 0, serial_t_ = 0;
  bool finished_ = false;

  struct DecodedUop {
    uint64_t dst, src, wgt;
  };
  std::vector<DecodedUop> kernel_;  // micro-ops of the executing GEMM/ALU, decoded once
  std::vector<uint32_t> uop_;
  std::vector<uint8_t> uop_valid_;
  bool narrow_ = false;                   // 8-bit inputs and weights
  std::vector<int16_t> inp16_, wgt16_;    // used when narrow_
  std::vector<int64_t> inp64_, wgt64_;    // otherwise
  std::vector<int64_t> acc_;
};

void SetErr(char* err, size_t err_len, const std::string& msg) {
  if (err && err_len) std::snprintf(err, err_len, "%s", msg.c_str());
}

}  // namespace

extern "C" {

int vta_sim_abi_version(void) { return VTA_SIM_ABI_VERSION; }

const char* vta_sim_source_hash(void) { return VTA_SIM_SOURCE_HASH; }

int vta_sim_run(const vta_sim_config* cfg, const vta_sim_options* opts, const uint8_t* insns,
                uint64_t n_insns, uint8_t* dram, uint64_t dram_bytes, vta_sim_stats* stats,
                char* err, size_t err_len) {
  SetErr(err, err_len, "");
  vta_sim_stats local_stats;
  if (!stats) stats = &local_stats;
  std::memset(stats, 0, sizeof(*stats));
  stats->error_insn = -1;
  if (!cfg || (!insns && n_insns) || (!dram && dram_bytes)) {
    SetErr(err, err_len, "null pointer argument");
    return VTA_SIM_ERR_ARG;
  }
  Config c;
  std::string msg;
  if (!Derive(*cfg, &c, &msg)) {
    SetErr(err, err_len, msg);
    return VTA_SIM_ERR_CONFIG;
  }
  vta_sim_options o{};
  if (opts) o = *opts;
  int code = VTA_SIM_OK;
  Sim* sim = nullptr;
  try {
    sim = new Sim(c, o, insns, n_insns, dram, dram_bytes, stats);
    sim->Run();
  } catch (const SimError& e) {
    code = e.code;
    stats->error_insn = e.insn;
    SetErr(err, err_len, e.msg);
  } catch (const std::bad_alloc&) {
    code = VTA_SIM_ERR_ARG;
    SetErr(err, err_len, "out of memory");
  } catch (const std::exception& e) {
    code = VTA_SIM_ERR_ARG;
    SetErr(err, err_len, std::string("internal error: ") + e.what());
  }
  if (sim && code != VTA_SIM_OK) stats->cycles = sim->Now();
  if (stats->cycles) stats->gemm_utilization = double(stats->gemm_counter) / double(stats->cycles);
  delete sim;
  return code;
}

int vta_sim_decode(const vta_sim_config* cfg, const uint8_t* insn, vta_sim_fields* out, char* err,
                   size_t err_len) {
  SetErr(err, err_len, "");
  if (!cfg || !insn || !out) {
    SetErr(err, err_len, "null pointer argument");
    return VTA_SIM_ERR_ARG;
  }
  Config c;
  std::string msg;
  if (!Derive(*cfg, &c, &msg)) {
    SetErr(err, err_len, msg);
    return VTA_SIM_ERR_CONFIG;
  }
  if (!DecodeFields(c, insn, out)) {
    SetErr(err, err_len, Cat("unknown opcode ", out->opcode));
    return VTA_SIM_ERR_DECODE;
  }
  return VTA_SIM_OK;
}

int vta_sim_decode_uop(const vta_sim_config* cfg, uint32_t uop, uint32_t* dst, uint32_t* src,
                       uint32_t* wgt, char* err, size_t err_len) {
  SetErr(err, err_len, "");
  if (!cfg || !dst || !src || !wgt) {
    SetErr(err, err_len, "null pointer argument");
    return VTA_SIM_ERR_ARG;
  }
  Config c;
  std::string msg;
  if (!Derive(*cfg, &c, &msg)) {
    SetErr(err, err_len, msg);
    return VTA_SIM_ERR_CONFIG;
  }
  const Words w{{uop, 0}};
  *dst = uint32_t(Get(w, c.uop[F_UOP_DST]));
  *src = uint32_t(Get(w, c.uop[F_UOP_SRC]));
  *wgt = uint32_t(Get(w, c.uop[F_UOP_WGT]));
  return VTA_SIM_OK;
}

}  // extern "C"
