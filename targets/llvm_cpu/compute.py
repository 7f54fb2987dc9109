"""TE compute definitions of the packed-layout kernels the CPU schedule rules know.

Every main block carries ``schedule_rule = "accelc.llvm_cpu.<kernel>"`` as a block attribute, so
the rules find their block again after FuseOps/FuseTIR (and a MetaSchedule ``ApplyCustomRule``
can later dispatch on the same name). ``accelc.template_version`` (absent = 1) changes when a
template's knobs change meaning, its operands' layout changes, or its default schedule does
(a log's records were kept only where they beat the default of their day): tuning records of
another version neither match (the workload hash differs) nor transfer
(``accelc/tuning/transfer.py`` compares it). Versions: conv2d_nchwc 4 (input-channel passes;
parallel cut by rows where activations outweigh weights), depthwise_conv2d_nchwc 2 (cut by
rows), conv2d_1x1_nchw 3 (packed operands), dense_packed 2 (wide default tile).
"""

from __future__ import annotations

from tvm import te, topi

CONV2D_NCHWC = "accelc.llvm_cpu.conv2d_nchwc"
DEPTHWISE_CONV2D_NCHWC = "accelc.llvm_cpu.depthwise_conv2d_nchwc"
DENSE_PACKED = "accelc.llvm_cpu.dense_packed"
CONV2D_1X1_NCHW = "accelc.llvm_cpu.conv2d_1x1_nchw"


def _pad(data, pad_top, pad_left, pad_bottom, pad_right):
    if pad_top == pad_left == pad_bottom == pad_right == 0:
        return data
    return topi.nn.pad(
        data, (0, 0, pad_top, pad_left, 0), (0, 0, pad_bottom, pad_right, 0), name="data_pad"
    )


def out_hw(in_hw, k_hw, strides, padding, dilation) -> tuple[int, int]:
    """Output height and width of a 2-D convolution/pool window (padding t, l, b, r)."""
    pt, pl, pb, pr = padding
    oh = (in_hw[0] + pt + pb - (k_hw[0] - 1) * dilation[0] - 1) // strides[0] + 1
    ow = (in_hw[1] + pl + pr - (k_hw[1] - 1) * dilation[1] - 1) // strides[1] + 1
    return oh, ow


def _padded_input(data, in_hw, k_hw, strides, padding, dilation, reg_n):
    """(oh, ow, ow rounded up to reg_n, zero-padded data) for an NCHW{c}c convolution whose
    output width is computed in whole register tiles."""
    oh, ow = out_hw(in_hw, k_hw, strides, padding, dilation)
    owp = -(-ow // reg_n) * reg_n
    pt, pl, pb, pr = padding
    # Right padding so that the padded-out columns read in-bounds (zero) input.
    pr_ext = max(pr, (owp - 1) * strides[1] + (k_hw[1] - 1) * dilation[1] + 1 - in_hw[1] - pl)
    return oh, ow, owp, _pad(data, pt, pl, pb, pr_ext)


def conv2d_nchwc(data, kernel, strides, padding, dilation, groups, out_dtype, reg_n, oc_vecs=1):
    """Grouped conv2d, data NCHW{ib}c, kernel OIHW{ib}i{ob}o, output NCHW{ob}c.

    The output width is computed up to a multiple of ``reg_n`` (the schedule's register tile)
    and cropped by a trailing injective block, so the micro-kernel has no tail. ``oc_vecs``
    (annotated for the schedule) is the number of output-channel blocks in the register tile;
    it divides the blocks of one group.
    """
    n, icc, ih, iw, ib = (int(x) for x in data.shape)
    occ, icc_g, kh, kw, kib, ob = (int(x) for x in kernel.shape)
    assert kib == ib, "kernel input block must equal data block"
    sh, sw = strides
    dh, dw = dilation
    oh, ow, owp, data_pad = _padded_input(data, (ih, iw), (kh, kw), strides, padding, dilation, reg_n)
    occ_per_group = occ // groups
    rc = te.reduce_axis((0, icc_g), "rc")
    rh = te.reduce_axis((0, kh), "rh")
    rw = te.reduce_axis((0, kw), "rw")
    rb = te.reduce_axis((0, ib), "rb")

    def _in_chunk(o, c):
        return c if groups == 1 else (o // occ_per_group) * icc_g + c

    conv = te.compute(
        (n, occ, oh, owp, ob),
        lambda b, o, y, x, ov: te.sum(
            data_pad[b, _in_chunk(o, rc), y * sh + rh * dh, x * sw + rw * dw, rb].astype(out_dtype)
            * kernel[o, rc, rh, rw, rb, ov].astype(out_dtype),
            axis=[rc, rh, rw, rb],
        ),
        name="conv2d_nchwc",
        attrs={"schedule_rule": CONV2D_NCHWC, "accelc.reg_n": reg_n, "accelc.oc_vecs": oc_vecs,
               "accelc.template_version": 4},
    )
    if owp == ow:
        return conv
    return te.compute((n, occ, oh, ow, ob), lambda *i: conv(*i), name="conv2d_nchwc_crop")


def depthwise_conv2d_nchwc(data, kernel, strides, padding, dilation, out_dtype, reg_n):
    """Depthwise conv2d (multiplier 1), data NCHW{b}c, kernel OIHW1i{b}o, output NCHW{b}c."""
    n, cc, ih, iw, cb = (int(x) for x in data.shape)
    kcc, _, kh, kw, _, kcb = (int(x) for x in kernel.shape)
    assert (kcc, kcb) == (cc, cb)
    sh, sw = strides
    dh, dw = dilation
    oh, ow, owp, data_pad = _padded_input(data, (ih, iw), (kh, kw), strides, padding, dilation, reg_n)
    rh = te.reduce_axis((0, kh), "rh")
    rw = te.reduce_axis((0, kw), "rw")
    conv = te.compute(
        (n, cc, oh, owp, cb),
        lambda b, c, y, x, cv: te.sum(
            data_pad[b, c, y * sh + rh * dh, x * sw + rw * dw, cv].astype(out_dtype)
            * kernel[c, 0, rh, rw, 0, cv].astype(out_dtype),
            axis=[rh, rw],
        ),
        name="depthwise_conv2d_nchwc",
        attrs={"schedule_rule": DEPTHWISE_CONV2D_NCHWC, "accelc.reg_n": reg_n, "accelc.template_version": 2},
    )
    if owp == ow:
        return conv
    return te.compute((n, cc, oh, ow, cb), lambda *i: conv(*i), name="depthwise_conv2d_nchwc_crop")


def dense_packed(data, weight_packed, n_valid, out_dtype):
    """``data[..., K] x W[K, N]`` with W pre-packed into panels ``Wp[N/bn, K, bn]``.

    The product is computed over whole panels (``N`` rounded up to ``bn``, the padding columns
    of ``Wp`` are zero) and cropped to ``n_valid`` by a trailing injective block.
    """
    *batch, k = (int(x) for x in data.shape)
    npanels, k2, bn = (int(x) for x in weight_packed.shape)
    assert k == k2
    rk = te.reduce_axis((0, k), "rk")
    dense = te.compute(
        (*batch, npanels * bn),
        lambda *idx: te.sum(
            data[(*idx[:-1], rk)].astype(out_dtype)
            * weight_packed[idx[-1] // bn, rk, idx[-1] % bn].astype(out_dtype),
            axis=[rk],
        ),
        name="dense_packed",
        attrs={"schedule_rule": DENSE_PACKED, "accelc.block_n": bn, "accelc.template_version": 2},
    )
    if npanels * bn == n_valid:
        return dense
    return te.compute((*batch, n_valid), lambda *i: dense(*i), name="dense_packed_crop")


def conv2d_1x1_nchw(data, kernel, groups, out_dtype, pixel_tile, rows=0):
    """Grouped 1x1 stride-1 conv2d in plain NCHW / OIHW, as one GEMM per group over pixels:
    ``out[n, o, p] = sum_c x[n, g(o) * cg + c, p] * w[o, c]`` with ``p = h * W + w``.

    For groups whose channel counts are no multiple of the vector width (ShuffleNet: 34
    channels a group), where NCHW{c}c would get 2-channel blocks, and for wide layers whose
    outputs fill no vector (SqueezeNet's 1000 classes): here the vector axis is the pixel
    axis. Both operands are packed as a GEMM packs its panels, so that the register tile
    reads memory in sequence: the input is copied into ``[n, pixel tiles, c, pixel_tile]``
    (the copy also pads the pixels up to a multiple of ``pixel_tile`` and flattens H, W), and
    the constant weight comes pre-packed ``[O / rows, cg, rows]`` (``rows``: the output
    channels of the register tile, annotated for the schedule). Measured on SqueezeNet's
    512 -> 1000 conv10: with weights ``[cg, O]`` (a tile's 20 weights 4000 bytes apart per
    input channel, 64 KiB a tile: out of L1, a new page every step) the kernel ran at 50
    GFLOP/s whatever the tile; packed it runs near the micro-kernel's speed. The output is
    cropped back to (H, W) by a trailing block. ``kernel`` may also be OIHW (a weight that is
    no constant).
    """
    n, c, h, w = (int(x) for x in data.shape)
    if len(kernel.shape) == 3:  # packed [O / rows, cg, rows]: a tile's rows side by side
        panel, cg = int(kernel.shape[2]), int(kernel.shape[1])
        o = int(kernel.shape[0]) * panel

        def weight(oc, k):
            return kernel[oc // panel, k, oc % panel]
    else:
        o, cg = int(kernel.shape[0]), int(kernel.shape[1])

        def weight(oc, k):
            return kernel[oc, k, 0, 0]
    og = o // groups
    hw = h * w
    tiles = -(-hw // pixel_tile)
    flat = te.compute(
        (n, tiles, c, pixel_tile),
        lambda b, t, ci, q: te.if_then_else(
            t * pixel_tile + q < hw,
            data[b, ci, (t * pixel_tile + q) // w, (t * pixel_tile + q) % w],
            te.const(0, data.dtype),
        ),
        name="data_flat",
    )
    rc = te.reduce_axis((0, cg), "rc")
    gemm = te.compute(
        (n, o, tiles * pixel_tile),
        lambda b, oc, p: te.sum(
            flat[b, p // pixel_tile, (oc // og) * cg + rc, p % pixel_tile].astype(out_dtype)
            * weight(oc, rc).astype(out_dtype),
            axis=[rc],
        ),
        name="conv2d_1x1_nchw",
        attrs={"schedule_rule": CONV2D_1X1_NCHW, "accelc.groups": groups, "accelc.pixel_tile": pixel_tile,
               "accelc.width": w, "accelc.pixels": hw, "accelc.rows": rows, "accelc.template_version": 3},
    )
    return te.compute((n, o, h, w), lambda b, oc, y, x: gemm[b, oc, y * w + x], name="conv2d_1x1_nchw_crop")
