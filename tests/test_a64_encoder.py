"""Every AArch64 encoder form round-trips through capstone, and through GNU as (golden)."""

from __future__ import annotations

import random
import shutil
import subprocess

import capstone
import pytest

from fexaot_tool.translate import a64
from fexaot_tool.translate.a64 import Cond, Shift

# (encoding, the assembler text capstone prints and GNU as accepts).  One row per
# form and alias the translator uses; several rows where a field has several cases.
FORMS: list[tuple[int, str]] = [
    (a64.add_imm(1, 0, 1, 4095), "add x0, x1, #0xfff"),
    (a64.add_imm(0, 3, 4, 1, lsl12=True), "add w3, w4, #1, lsl #12"),
    (a64.adds_imm(1, 5, 6, 7), "adds x5, x6, #7"),
    (a64.sub_imm(1, 8, 9, 16), "sub x8, x9, #0x10"),
    (a64.subs_imm(0, 31, 10, 1), "cmp w10, #1"),
    (a64.and_imm(1, 1, 2, 0xFF), "and x1, x2, #0xff"),
    (a64.orr_imm(0, 1, 2, 0x80000000), "orr w1, w2, #0x80000000"),
    (a64.eor_imm(1, 1, 2, 1), "eor x1, x2, #1"),
    (a64.ands_imm(1, 31, 2, 0x5555555555555555), "tst x2, #0x5555555555555555"),
    (a64.movz(1, 0, 0x1234, 1), "mov x0, #0x12340000"),
    (a64.movn(0, 0, 0), "mov w0, #-1"),
    (a64.movk(1, 7, 0xBEEF, 3), "movk x7, #0xbeef, lsl #48"),
    (a64.sbfm(1, 1, 2, 0, 7), "sxtb x1, w2"),
    (a64.ubfm(0, 1, 2, 0, 15), "uxth w1, w2"),
    (a64.bfm(1, 1, 2, 56, 7), "bfi x1, x2, #8, #8"),
    (a64.extr(1, 1, 2, 3, 5), "extr x1, x2, x3, #5"),
    (a64.adr(0, 16), "adr x0, #0x1010"),
    (a64.add_reg(1, 1, 2, 3, Shift.LSL, 3), "add x1, x2, x3, lsl #3"),
    (a64.adds_reg(0, 31, 31, 4, Shift.LSL, 24), "cmn wzr, w4, lsl #24"),
    (a64.sub_reg(1, 1, 2, 3, Shift.ASR, 63), "sub x1, x2, x3, asr #63"),
    (a64.subs_reg(1, 1, 2, 3), "subs x1, x2, x3"),
    (a64.adc(1, 1, 2, 3), "adc x1, x2, x3"),
    (a64.adcs(0, 1, 2, 3), "adcs w1, w2, w3"),
    (a64.sbc(1, 1, 2, 3), "sbc x1, x2, x3"),
    (a64.sbcs(1, 1, 2, 3), "sbcs x1, x2, x3"),
    (a64.and_reg(1, 1, 2, 3), "and x1, x2, x3"),
    (a64.bic_reg(1, 1, 2, 3), "bic x1, x2, x3"),
    (a64.orr_reg(1, 1, 2, 3, Shift.LSR, 4), "orr x1, x2, x3, lsr #4"),
    (a64.orn_reg(0, 1, 31, 3), "mvn w1, w3"),
    (a64.eor_reg(1, 1, 2, 3, Shift.ROR, 7), "eor x1, x2, x3, ror #7"),
    (a64.ands_reg(1, 31, 2, 3), "tst x2, x3"),
    (a64.lslv(1, 1, 2, 3), "lsl x1, x2, x3"),
    (a64.lsrv(0, 1, 2, 3), "lsr w1, w2, w3"),
    (a64.asrv(1, 1, 2, 3), "asr x1, x2, x3"),
    (a64.rorv(1, 1, 2, 3), "ror x1, x2, x3"),
    (a64.udiv(1, 1, 2, 3), "udiv x1, x2, x3"),
    (a64.sdiv(0, 1, 2, 3), "sdiv w1, w2, w3"),
    (a64.madd(1, 1, 2, 3, 4), "madd x1, x2, x3, x4"),
    (a64.madd(1, 1, 2, 3, 31), "mul x1, x2, x3"),
    (a64.msub(1, 1, 2, 3, 4), "msub x1, x2, x3, x4"),
    (a64.smaddl(1, 2, 3, 31), "smull x1, w2, w3"),
    (a64.umaddl(1, 2, 3, 31), "umull x1, w2, w3"),
    (a64.smulh(1, 2, 3), "smulh x1, x2, x3"),
    (a64.umulh(1, 2, 3), "umulh x1, x2, x3"),
    (a64.csel(1, 1, 2, 3, Cond.HS), "csel x1, x2, x3, hs"),
    (a64.csinc(0, 1, 2, 3, Cond.LT), "csinc w1, w2, w3, lt"),
    (a64.csinv(1, 1, 2, 3, Cond.GT), "csinv x1, x2, x3, gt"),
    (a64.csneg(1, 1, 2, 3, Cond.MI), "csneg x1, x2, x3, mi"),
    (a64.ccmp_imm(1, 2, 0, 4, Cond.EQ), "ccmp x2, #0, #4, eq"),
    (a64.clz(1, 1, 2), "clz x1, x2"),
    (a64.rbit(0, 1, 2), "rbit w1, w2"),
    (a64.rev16(0, 1, 2), "rev16 w1, w2"),
    (a64.rev32(1, 2), "rev32 x1, x2"),
    (a64.rev(1, 1, 2), "rev x1, x2"),
    (a64.rev(0, 1, 2), "rev w1, w2"),
    (a64.str_uimm(3, 4, 28, 0x80), "str x4, [x28, #0x80]"),
    (a64.str_uimm(0, 4, 5, 3), "strb w4, [x5, #3]"),
    (a64.ldr_uimm(2, 4, 28, 0xC0), "ldr w4, [x28, #0xc0]"),
    (a64.ldr_uimm(1, 4, 5, 2), "ldrh w4, [x5, #2]"),
    (a64.ldrs_uimm(2, 4, 5, 4), "ldrsw x4, [x5, #4]"),
    (a64.stur(3, 4, 5, -8), "stur x4, [x5, #-8]"),
    (a64.ldur(1, 4, 5, 255), "ldurh w4, [x5, #0xff]"),
    (a64.str_pre(3, 4, 8, -8), "str x4, [x8, #-8]!"),
    (a64.ldr_post(3, 4, 8, 8), "ldr x4, [x8], #8"),
    (a64.ldr_literal(1, 0, 64), "ldr x0, #0x1040"),
    (a64.ldr_literal(0, 0, -4), "ldr w0, #0xffc"),
    (a64.ldapr(3, 1, 2), "ldapr x1, [x2]"),
    (a64.ldapr(0, 1, 2), "ldaprb w1, [x2]"),
    (a64.ldapr(1, 1, 2), "ldaprh w1, [x2]"),
    (a64.ldar(2, 1, 2), "ldar w1, [x2]"),
    (a64.stlr(3, 1, 2), "stlr x1, [x2]"),
    (a64.stlr(0, 1, 2), "stlrb w1, [x2]"),
    (a64.b(-8), "b #0xff8"),
    (a64.bl(0x100), "bl #0x1100"),
    (a64.b_cond(Cond.NE, 16), "b.ne #0x1010"),
    (a64.cbz(1, 3, 8), "cbz x3, #0x1008"),
    (a64.cbnz(0, 3, -12), "cbnz w3, #0xff4"),
    (a64.tbz(3, 40, 8), "tbz x3, #0x28, #0x1008"),
    (a64.tbnz(3, 0, 12), "tbnz w3, #0, #0x100c"),
    (a64.br(1), "br x1"),
    (a64.blr(2), "blr x2"),
    (a64.ret(), "ret"),
    (a64.mrs_nzcv(3), "mrs x3, nzcv"),
    (a64.msr_nzcv(3), "msr nzcv, x3"),
    (a64.cfinv(), "cfinv"),
    (a64.rmif(3, 28, a64.C_BIT), "rmif x3, #0x1c, #2"),
    (a64.setf8(3), "setf8 w3"),
    (a64.setf16(3), "setf16 w3"),
    (a64.nop(), "nop"),
    (a64.brk(1), "brk #1"),
    (a64.mov_reg(1, 4, 5), "mov x4, x5"),
    (a64.lsl_imm(1, 1, 2, 3), "lsl x1, x2, #3"),
    (a64.lsr_imm(0, 1, 2, 24), "lsr w1, w2, #0x18"),
    (a64.asr_imm(1, 1, 2, 63), "asr x1, x2, #0x3f"),
    (a64.ror_imm(1, 1, 2, 8), "ror x1, x2, #8"),
    (a64.ubfx(1, 1, 2, 8, 8), "ubfx x1, x2, #8, #8"),
    (a64.sbfx(1, 1, 2, 0, 32), "sxtw x1, w2"),
    (a64.bfi(1, 1, 2, 0, 16), "bfxil x1, x2, #0, #0x10"),
    (a64.cset(0, 1, Cond.EQ), "cset w1, eq"),
    (a64.csetm(1, 1, Cond.HI), "csetm x1, hi"),
]

# SIMD&FP forms (vector registers v0-v31).
SIMD_FORMS: list[tuple[int, str]] = [
    (a64.ldr_fp_uimm(4, 1, 2, 32), "ldr q1, [x2, #0x20]"),
    (a64.ldr_fp_uimm(3, 1, 2, 8), "ldr d1, [x2, #8]"),
    (a64.ldr_fp_uimm(2, 1, 2, 4), "ldr s1, [x2, #4]"),
    (a64.ldr_fp_uimm(0, 1, 2, 3), "ldr b1, [x2, #3]"),
    (a64.ldr_fp_uimm(1, 1, 2, 2), "ldr h1, [x2, #2]"),
    (a64.str_fp_uimm(4, 1, 2, 16), "str q1, [x2, #0x10]"),
    (a64.str_fp_uimm(3, 1, 2, 0), "str d1, [x2]"),
    (a64.str_fp_uimm(2, 17, 28, 0x104), "str s17, [x28, #0x104]"),
    (a64.ldur_fp(4, 1, 2, -16), "ldur q1, [x2, #-0x10]"),
    (a64.ldur_fp(3, 1, 2, 3), "ldur d1, [x2, #3]"),
    (a64.stur_fp(4, 1, 2, 255), "stur q1, [x2, #0xff]"),
    (a64.stur_fp(2, 1, 2, -256), "stur s1, [x2, #-0x100]"),
    (a64.and_v(1, 1, 2, 3), "and v1.16b, v2.16b, v3.16b"),
    (a64.bic_v(1, 1, 2, 3), "bic v1.16b, v2.16b, v3.16b"),
    (a64.orr_v(1, 1, 2, 3), "orr v1.16b, v2.16b, v3.16b"),
    (a64.orn_v(1, 1, 2, 3), "orn v1.16b, v2.16b, v3.16b"),
    (a64.eor_v(1, 1, 2, 3), "eor v1.16b, v2.16b, v3.16b"),
    (a64.eor_v(0, 1, 2, 3), "eor v1.8b, v2.8b, v3.8b"),
    (a64.mov_v(1, 16, 31), "mov v16.16b, v31.16b"),
    (a64.mov_v(0, 1, 2), "mov v1.8b, v2.8b"),
    (a64.movi_zero(5), "movi v5.2d, #0000000000000000"),
    (a64.fmov_to_gpr(1, 1, 2), "fmov x1, d2"),
    (a64.fmov_to_gpr(0, 1, 2), "fmov w1, s2"),
    (a64.fmov_from_gpr(1, 1, 2), "fmov d1, x2"),
    (a64.fmov_from_gpr(0, 1, 31), "fmov s1, wzr"),
    (a64.ins_gpr(3, 1, 1, 2), "mov v1.d[1], x2"),
    (a64.ins_gpr(2, 1, 3, 2), "mov v1.s[3], w2"),
    (a64.ins_gpr(0, 1, 15, 2), "mov v1.b[0xf], w2"),
    (a64.umov(3, 1, 2, 1), "mov x1, v2.d[1]"),
    (a64.umov(2, 1, 2, 2), "mov w1, v2.s[2]"),
    (a64.umov(1, 1, 2, 7), "umov w1, v2.h[7]"),
    (a64.umov(0, 1, 2, 15), "umov w1, v2.b[0xf]"),
    (a64.ins_elem(2, 1, 0, 2, 3), "mov v1.s[0], v2.s[3]"),
    (a64.ins_elem(3, 1, 1, 2, 0), "mov v1.d[1], v2.d[0]"),
    (a64.dmb(a64.DMB_ISH), "dmb ish"),
    (a64.dmb(a64.DMB_ISHLD), "dmb ishld"),
]
FORMS += SIMD_FORMS

# SIMD integer forms (SSE2 integer instructions).
SIMD_INT_FORMS: list[tuple[int, str]] = [
    (a64.add_v(0, 1, 1, 2, 3), "add v1.16b, v2.16b, v3.16b"),
    (a64.add_v(3, 1, 1, 2, 3), "add v1.2d, v2.2d, v3.2d"),
    (a64.sub_v(1, 1, 1, 2, 3), "sub v1.8h, v2.8h, v3.8h"),
    (a64.uqadd(0, 1, 1, 2, 3), "uqadd v1.16b, v2.16b, v3.16b"),
    (a64.sqadd(1, 1, 1, 2, 3), "sqadd v1.8h, v2.8h, v3.8h"),
    (a64.uqsub(1, 1, 1, 2, 3), "uqsub v1.8h, v2.8h, v3.8h"),
    (a64.sqsub(0, 1, 1, 2, 3), "sqsub v1.16b, v2.16b, v3.16b"),
    (a64.cmeq_v(2, 1, 1, 2, 3), "cmeq v1.4s, v2.4s, v3.4s"),
    (a64.cmgt_v(0, 1, 1, 2, 3), "cmgt v1.16b, v2.16b, v3.16b"),
    (a64.umax_v(0, 1, 1, 2, 3), "umax v1.16b, v2.16b, v3.16b"),
    (a64.umin_v(2, 0, 1, 2, 3), "umin v1.2s, v2.2s, v3.2s"),
    (a64.smax_v(1, 1, 1, 2, 3), "smax v1.8h, v2.8h, v3.8h"),
    (a64.smin_v(1, 1, 1, 2, 3), "smin v1.8h, v2.8h, v3.8h"),
    (a64.urhadd(1, 1, 1, 2, 3), "urhadd v1.8h, v2.8h, v3.8h"),
    (a64.uabd(0, 1, 1, 2, 3), "uabd v1.16b, v2.16b, v3.16b"),
    (a64.mul_v(1, 1, 1, 2, 3), "mul v1.8h, v2.8h, v3.8h"),
    (a64.addp_v(2, 1, 1, 2, 3), "addp v1.4s, v2.4s, v3.4s"),
    (a64.sshl_v(3, 1, 1, 2, 3), "sshl v1.2d, v2.2d, v3.2d"),
    (a64.ushl_v(1, 1, 1, 2, 3), "ushl v1.8h, v2.8h, v3.8h"),
    (a64.smull_v(1, 0, 1, 2, 3), "smull v1.4s, v2.4h, v3.4h"),
    (a64.smull_v(1, 1, 1, 2, 3), "smull2 v1.4s, v2.8h, v3.8h"),
    (a64.umull_v(2, 0, 1, 2, 3), "umull v1.2d, v2.2s, v3.2s"),
    (a64.umull_v(1, 1, 1, 2, 3), "umull2 v1.4s, v2.8h, v3.8h"),
    (a64.neg_v(0, 0, 1, 2), "neg v1.8b, v2.8b"),
    (a64.uaddlp(0, 1, 1, 2), "uaddlp v1.8h, v2.16b"),
    (a64.uaddlp(2, 1, 1, 2), "uaddlp v1.2d, v2.4s"),
    (a64.xtn(2, 1, 2), "xtn v1.2s, v2.2d"),
    (a64.sqxtn(0, 1, 2), "sqxtn v1.8b, v2.8h"),
    (a64.sqxtn2(1, 1, 2), "sqxtn2 v1.8h, v2.4s"),
    (a64.sqxtun(0, 1, 2), "sqxtun v1.8b, v2.8h"),
    (a64.sqxtun2(0, 1, 2), "sqxtun2 v1.16b, v2.8h"),
    (a64.uqxtn(2, 1, 2), "uqxtn v1.2s, v2.2d"),
    (a64.shl_v(1, 1, 1, 2, 15), "shl v1.8h, v2.8h, #0xf"),
    (a64.shl_v(3, 1, 1, 2, 1), "shl v1.2d, v2.2d, #1"),
    (a64.ushr_v(0, 1, 1, 2, 7), "ushr v1.16b, v2.16b, #7"),
    (a64.ushr_v(3, 1, 1, 2, 64), "ushr v1.2d, v2.2d, #0x40"),
    (a64.sshr_v(2, 1, 1, 2, 32), "sshr v1.4s, v2.4s, #0x20"),
    (a64.usra(1, 1, 1, 2, 7), "usra v1.8h, v2.8h, #7"),
    (a64.usra(3, 1, 1, 2, 28), "usra v1.2d, v2.2d, #0x1c"),
    (a64.uzp1(2, 1, 1, 2, 3), "uzp1 v1.4s, v2.4s, v3.4s"),
    (a64.uzp2(1, 1, 1, 2, 3), "uzp2 v1.8h, v2.8h, v3.8h"),
    (a64.zip1(0, 1, 1, 2, 3), "zip1 v1.16b, v2.16b, v3.16b"),
    (a64.zip2(3, 1, 1, 2, 3), "zip2 v1.2d, v2.2d, v3.2d"),
    (a64.ext_v(1, 1, 2, 3, 8), "ext v1.16b, v2.16b, v3.16b, #8"),
    (a64.dup_elem(0, 1, 1, 2, 0), "dup v1.16b, v2.b[0]"),
    (a64.dup_elem(2, 1, 1, 2, 3), "dup v1.4s, v2.s[3]"),
    (a64.movi_v(0, 1, 1, 0x40), "movi v1.16b, #0x40"),
    (a64.movi_v(2, 0, 1, 0x40), "movi v1.2s, #0x40"),
    (a64.movi_v(1, 1, 1, 0xff), "movi v1.8h, #0xff"),
]
FORMS += SIMD_INT_FORMS

# Atomics (x86 locked instructions): LSE acquire+release forms, exclusive pairs.
ATOMIC_FORMS: list[tuple[int, str]] = [
    (a64.ldaddal(3, 1, 2, 3), "ldaddal x1, x2, [x3]"),
    (a64.ldaddal(0, 1, 2, 3), "ldaddalb w1, w2, [x3]"),
    (a64.ldclral(1, 1, 2, 3), "ldclralh w1, w2, [x3]"),
    (a64.ldeoral(2, 4, 5, 6), "ldeoral w4, w5, [x6]"),
    (a64.ldsetal(3, 1, 2, 3), "ldsetal x1, x2, [x3]"),
    (a64.ldsetal(0, 1, 2, 3), "ldsetalb w1, w2, [x3]"),
    (a64.swpal(3, 1, 2, 3), "swpal x1, x2, [x3]"),
    (a64.swpal(1, 1, 2, 3), "swpalh w1, w2, [x3]"),
    (a64.casal(3, 1, 2, 3), "casal x1, x2, [x3]"),
    (a64.casal(2, 1, 2, 3), "casal w1, w2, [x3]"),
    (a64.casal(0, 1, 2, 3), "casalb w1, w2, [x3]"),
    (a64.ldaxr(3, 1, 2), "ldaxr x1, [x2]"),
    (a64.ldaxr(1, 1, 2), "ldaxrh w1, [x2]"),
    (a64.stlxr(3, 1, 2, 3), "stlxr w1, x2, [x3]"),
    (a64.stlxr(0, 1, 2, 3), "stlxrb w1, w2, [x3]"),
    (a64.ldaxp(1, 2, 3), "ldaxp x1, x2, [x3]"),
    (a64.stlxp(1, 2, 3, 4), "stlxp w1, x2, x3, [x4]"),
]
FORMS += ATOMIC_FORMS

# SIMD floating point (size 2: single, 3: double).
SIMD_FP_FORMS: list[tuple[int, str]] = [
    (a64.fadd_v(2, 1, 1, 2, 3), "fadd v1.4s, v2.4s, v3.4s"),
    (a64.fadd_v(3, 1, 16, 17, 31), "fadd v16.2d, v17.2d, v31.2d"),
    (a64.fsub_v(3, 1, 1, 2, 3), "fsub v1.2d, v2.2d, v3.2d"),
    (a64.fmul_v(2, 1, 1, 2, 3), "fmul v1.4s, v2.4s, v3.4s"),
    (a64.fdiv_v(3, 1, 1, 2, 3), "fdiv v1.2d, v2.2d, v3.2d"),
    (a64.fmax_v(2, 1, 1, 2, 3), "fmax v1.4s, v2.4s, v3.4s"),
    (a64.fcmeq_v(3, 1, 1, 2, 3), "fcmeq v1.2d, v2.2d, v3.2d"),
    (a64.fcmge_v(2, 1, 1, 2, 3), "fcmge v1.4s, v2.4s, v3.4s"),
    (a64.fcmgt_v(3, 1, 1, 2, 3), "fcmgt v1.2d, v2.2d, v3.2d"),
    (a64.fcmgt_v(2, 0, 1, 2, 3), "fcmgt v1.2s, v2.2s, v3.2s"),
    (a64.fsqrt_v(2, 1, 1, 2), "fsqrt v1.4s, v2.4s"),
    (a64.fneg_v(3, 1, 1, 2), "fneg v1.2d, v2.2d"),
    (a64.frinti_v(2, 1, 1, 2), "frinti v1.4s, v2.4s"),
    (a64.scvtf_v(3, 1, 1, 2), "scvtf v1.2d, v2.2d"),
    (a64.fcvtzs_v(2, 1, 1, 2), "fcvtzs v1.4s, v2.4s"),
    (a64.fcvtl(1, 2), "fcvtl v1.2d, v2.2s"),
    (a64.fcvtn(1, 2), "fcvtn v1.2s, v2.2d"),
    (a64.not_v(1, 1, 2), "mvn v1.16b, v2.16b"),
    (a64.sxtl(2, 1, 2), "sshll v1.2d, v2.2s, #0"),
    (a64.bsl_v(1, 1, 2, 3), "bsl v1.16b, v2.16b, v3.16b"),
    (a64.bit_v(1, 1, 2, 3), "bit v1.16b, v2.16b, v3.16b"),
    (a64.bif_v(1, 1, 2, 3), "bif v1.16b, v2.16b, v3.16b"),
    (a64.movi_shifted(1, 1, 0x4F, 24), "movi v1.4s, #0x4f, lsl #24"),
    (a64.movi_shifted(1, 1, 0x80, 8), "movi v1.4s, #0x80, lsl #8"),
    (a64.dup_gpr(3, 1, 1, 2), "dup v1.2d, x2"),
    (a64.dup_gpr(2, 1, 1, 2), "dup v1.4s, w2"),
    (a64.fcmp(2, 1, 2), "fcmp s1, s2"),
    (a64.fcmp(3, 1, 2), "fcmp d1, d2"),
    (a64.fccmp(3, 1, 2, 4, Cond.VC), "fccmp d1, d2, #4, vc"),
    (a64.fccmp(2, 1, 2, 0, Cond.EQ), "fccmp s1, s2, #0, eq"),
    (a64.scvtf_gpr(1, 3, 1, 2), "scvtf d1, x2"),
    (a64.scvtf_gpr(0, 2, 1, 2), "scvtf s1, w2"),
    (a64.scvtf_gpr(0, 3, 1, 2), "scvtf d1, w2"),
    (a64.fcvtzs_gpr(0, 3, 1, 2), "fcvtzs w1, d2"),
    (a64.fcvtzs_gpr(1, 2, 1, 2), "fcvtzs x1, s2"),
    (a64.fcvt(3, 2, 1, 2), "fcvt d1, s2"),
    (a64.fcvt(2, 3, 1, 2), "fcvt s1, d2"),
    (a64.msr_fpcr(1), "msr fpcr, x1"),
    (a64.mrs_fpcr(1), "mrs x1, fpcr"),
    (a64.msr_fpsr(31), "msr fpsr, xzr"),
    (a64.mrs_fpsr(2), "mrs x2, fpsr"),
]
FORMS += SIMD_FP_FORMS


def _capstone() -> capstone.Cs:
    return capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)


# Rows are disassembled at BASE, so pc-relative rows show BASE + offset (capstone
# prints targets as absolute addresses).
BASE = 0x1000


def _disasm(cs: capstone.Cs, word: int) -> str:
    insns = list(cs.disasm_lite(word.to_bytes(4, "little"), BASE))
    assert len(insns) == 1, f"capstone cannot decode {word:#010x}"
    _, _, mnemonic, operands = insns[0]
    return f"{mnemonic} {operands}".strip()


@pytest.mark.parametrize("word,text", FORMS, ids=[t for _, t in FORMS])
def test_form_round_trips_through_capstone(word: int, text: str) -> None:
    assert _disasm(_capstone(), word) == text


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-as") is None, reason="binutils-aarch64-linux-gnu not installed")
def test_forms_match_gnu_as(tmp_path) -> None:
    """GNU as assembles each row's text to the same word our encoder produced."""
    source = tmp_path / "forms.s"
    # Branch and literal offsets are relative to each instruction's own address.
    lines = []
    for i, (_, text) in enumerate(FORMS):
        lines.append(f".org {i * 4}")
        lines.append(_pc_relative_to_label(text, i * 4))
    source.write_text("\n".join(lines) + "\n")
    obj = tmp_path / "forms.o"
    subprocess.run(["aarch64-linux-gnu-as", "-march=armv8.4-a", "-o", str(obj), str(source)], check=True)
    binary = tmp_path / "forms.bin"
    subprocess.run(["aarch64-linux-gnu-objcopy", "-O", "binary", "-j", ".text", str(obj), str(binary)], check=True)
    data = binary.read_bytes()
    for i, (word, text) in enumerate(FORMS):
        got = int.from_bytes(data[i * 4:i * 4 + 4], "little")
        assert got == word, f"{text}: GNU as {got:#010x}, encoder {word:#010x}"


_PC_RELATIVE = ("b ", "bl ", "b.", "cbz", "cbnz", "tbz", "tbnz", "adr ", "ldr x0, #", "ldr w0, #")


def _pc_relative_to_label(text: str, address: int) -> str:
    """Capstone prints pc-relative targets as absolute addresses from BASE; GNU as wants `.+off`."""
    if not text.startswith(_PC_RELATIVE):
        return text
    head, _, target = text.rpartition("#")
    offset = int(target, 0) - BASE
    return f"{head}.{offset:+d}".replace("#.", ".")


def test_bitmask_immediates_round_trip_random() -> None:
    """Random valid logical immediates encode and decode back; invalid ones are refused."""
    rnd = random.Random(7)
    cs = _capstone()
    for _ in range(3000):
        width = rnd.choice((32, 64))
        size = rnd.choice([s for s in (2, 4, 8, 16, 32, 64) if s <= width])
        ones = rnd.randrange(1, size)
        rotation = rnd.randrange(size)
        element = ((1 << ones) - 1)
        element = ((element >> rotation) | (element << (size - rotation))) & ((1 << size) - 1)
        value = 0
        for shift in range(0, width, size):
            value |= element << shift
        word = a64.and_imm(1 if width == 64 else 0, 1, 2, value)
        _, _, _, operands = next(cs.disasm_lite(word.to_bytes(4, "little"), 0))
        assert int(operands.rpartition("#")[2], 0) == value, (hex(value), operands)
    for bad in (0, (1 << 64) - 1, 0x1234, 0xFF00FF01):
        assert a64.encode_bitmask(bad, 64) is None
    with pytest.raises(ValueError):
        a64.orr_imm(1, 0, 0, 0x1234)
