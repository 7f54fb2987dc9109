/*
 * accelc VTA simulator: bit-exact functional model + cycle model of a VTA-like accelerator.
 * Plain C ABI (loaded with ctypes by targets/vta/simulator.py); no TVM dependency.
 *
 * Program model (as the real VTA): the host passes the instruction stream (n_insns x 16 bytes,
 * VTA's hw_spec.h layout for the given config) and one DRAM image. Everything an instruction
 * addresses lives in that DRAM: micro-ops (loaded with LOAD UOP, 4 bytes each), inputs,
 * weights, accumulator/bias data and outputs. DRAM addresses in instructions count elements of
 * the target buffer (byte address = dram_base * element bytes), as in VTA.
 *
 * Functional semantics follow VTA's fsim (sim_driver.cc): zero-padded 2-D loads, GEMM
 * int8 x int8 -> int32 with wraparound, ALU MIN/MAX/ADD/SHR/MUL (16-bit sign-extended
 * immediates), STORE truncating the accumulator to the output width. SHR by s >= 0 is an
 * arithmetic right shift (s >= width gives the sign), s < 0 shifts left by -s (>= width gives 0).
 *
 * Cycle model (deterministic approximation of tsim): a fetch unit reads 16-byte instructions
 * over the bus (DMA latency once, then ceil(16 / bus bytes) cycles each) into three in-order
 * command queues (load, compute, store; cmd_queue_depth each; fetch stalls on a full queue).
 * An instruction starts at max(engine free, dispatched, popped tokens' timestamps); its pushes
 * happen at completion (blocking while the token queue holds dep_queue_depth tokens).
 * Costs: LOAD/STORE dma_latency + ceil(bytes / bus bytes) (+1 per padded element written),
 * GEMM gemm_pipeline_depth + gemm_ii * iterations (reset GEMMs included), ALU likewise with
 * alu_*, FINISH and zero-size NOPs 1 cycle. The load, compute and store engines have separate
 * DMA ports (no bus contention). The engine that can start earliest runs next, so the
 * functional result of a correctly synchronized program never depends on timing.
 *
 * Errors are returned (status code + message, never abort/hang): illegal fields, buffer index
 * overflow, DRAM out of range, deadlock (naming the blocked queue), tokens left or engines busy
 * at FINISH, exceeding the work limit.
 */
#ifndef ACCELC_VTA_SIM_H_
#define ACCELC_VTA_SIM_H_

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define VTA_SIM_API __declspec(dllexport)
#else
#define VTA_SIM_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a struct below or a function signature changes. */
#define VTA_SIM_ABI_VERSION 1

enum vta_sim_status {
  VTA_SIM_OK = 0,
  VTA_SIM_ERR_ARG = 1,      /* null pointer, bad size, internal failure (out of memory) */
  VTA_SIM_ERR_CONFIG = 2,   /* invalid configuration */
  VTA_SIM_ERR_DECODE = 3,   /* unknown opcode / memory type / ALU op, illegal field or flag */
  VTA_SIM_ERR_SRAM = 4,     /* on-chip buffer index out of range, micro-op never loaded */
  VTA_SIM_ERR_DRAM = 5,     /* DRAM access outside the image */
  VTA_SIM_ERR_DEADLOCK = 6, /* no engine can make progress */
  VTA_SIM_ERR_FINISH = 7,   /* tokens left or an engine still busy/pending at FINISH */
  VTA_SIM_ERR_PROGRAM = 8,  /* empty program, missing FINISH, instructions after FINISH */
  VTA_SIM_ERR_LIMIT = 9,    /* work limit (max_uop_iters) exceeded */
  VTA_SIM_ERR_HAZARD = 10   /* strict_hazards: acc row rewritten within 2 micro-ops */
};

/* VTA parameters (vta_config.json) and cycle-model parameters; see targets/vta/config.py. */
typedef struct vta_sim_config {
  int32_t log_inp_width, log_wgt_width, log_acc_width;
  int32_t log_batch, log_block_in, log_block_out;
  int32_t log_uop_buff_size, log_inp_buff_size, log_wgt_buff_size, log_acc_buff_size;
  int32_t log_bus_width;
  int32_t dma_latency;
  int32_t gemm_pipeline_depth, alu_pipeline_depth;
  int32_t gemm_ii, alu_ii;
  int32_t cmd_queue_depth, dep_queue_depth;
} vta_sim_config;

typedef struct vta_sim_options {
  /* Each instruction starts after the previous one in program order has completed
   * (VTA_DEBUG_FORCE_SERIAL); tokens are still checked. */
  int32_t force_serial;
  /* Fail when a GEMM/ALU micro-op writes an accumulator row written by one of the two
   * previous micro-op iterations of the same instruction (VTA runtime VerifyDep); otherwise
   * such writes are only counted in stats.acc_raw_hazards. */
  int32_t strict_hazards;
  /* Abort once GEMM+ALU micro-op iterations exceed this (0: 1 << 28). */
  uint64_t max_uop_iters;
  /* Optional, 2 * n_insns entries: start and completion cycle of each instruction. */
  uint64_t* trace;
} vta_sim_options;

enum vta_sim_engine { VTA_SIM_LOAD = 0, VTA_SIM_COMPUTE = 1, VTA_SIM_STORE = 2 };

typedef struct vta_sim_stats {
  uint64_t cycles; /* FINISH completion */
  /* fsim's profiler counters */
  uint64_t inp_load_nbytes, wgt_load_nbytes, acc_load_nbytes, uop_load_nbytes;
  uint64_t out_store_nbytes, insn_load_nbytes;
  uint64_t gemm_counter;       /* micro-op iterations of non-reset GEMMs */
  uint64_t gemm_reset_counter; /* micro-op iterations of reset GEMMs */
  uint64_t alu_counter;        /* micro-op iterations of ALU instructions */
  uint64_t acc_raw_hazards;
  /* instruction mix */
  uint64_t n_load, n_store, n_gemm, n_alu, n_finish, n_nop;
  /* per engine (vta_sim_engine): cycles executing, cycles waiting with work left
   * (for fetch, tokens or a full token queue), instructions executed */
  uint64_t busy[3], stall[3], n_insns[3];
  double gemm_utilization; /* gemm_counter / cycles */
  int64_t error_insn;      /* instruction the error refers to, -1 if none */
} vta_sim_stats;

/* Field values of one decoded instruction (all kinds share the struct; unused fields 0). */
typedef struct vta_sim_fields {
  int64_t opcode, pop_prev, pop_next, push_prev, push_next;
  int64_t memory_type, sram_base, dram_base, y_size, x_size, x_stride;
  int64_t y_pad_0, y_pad_1, x_pad_0, x_pad_1;
  int64_t reset, uop_bgn, uop_end, iter_out, iter_in;
  int64_t dst_factor_out, dst_factor_in, src_factor_out, src_factor_in;
  int64_t wgt_factor_out, wgt_factor_in;
  int64_t alu_opcode, use_imm, imm;
} vta_sim_fields;

VTA_SIM_API int vta_sim_abi_version(void);
/* sha256 of the sha256 hex digests of vta_sim.h and vta_sim.cc (set by CMake; "" if unknown). */
VTA_SIM_API const char* vta_sim_source_hash(void);

/* Run a program to FINISH. dram is read and written in place. opts may be NULL (defaults).
 * stats is filled (partially on error). Returns a vta_sim_status; on error err holds a
 * NUL-terminated message (truncated to err_len). */
VTA_SIM_API int vta_sim_run(const vta_sim_config* cfg, const vta_sim_options* opts,
                            const uint8_t* insns, uint64_t n_insns, uint8_t* dram,
                            uint64_t dram_bytes, vta_sim_stats* stats, char* err, size_t err_len);

/* Decode one 16-byte instruction (no legality checks beyond the opcode). */
VTA_SIM_API int vta_sim_decode(const vta_sim_config* cfg, const uint8_t* insn, vta_sim_fields* out,
                               char* err, size_t err_len);

/* Decode one 32-bit micro-op into (dst, src, wgt). */
VTA_SIM_API int vta_sim_decode_uop(const vta_sim_config* cfg, uint32_t uop, uint32_t* dst,
                                   uint32_t* src, uint32_t* wgt, char* err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif /* ACCELC_VTA_SIM_H_ */
