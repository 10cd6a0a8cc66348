"""The window pass's vector instructions, written as LLVM IR: several inputs' layer sums at
once (the forward passes), and ``y += α·x`` on rows (the backward passes).

At support window k the key's row runs k − 1 forward passes per record over the same θ, one
per older window entry (:func:`adaptd.learner.window.network_window_grad`). One at a time,
each unit's sum (its bias, then its inputs in order) is a chain of dependent additions, and
the passes are matrix–vector products. Taken :data:`LANES` entries at a time with the entries
innermost (``a[v·LANES + e]`` is input ``v`` of entry ``e``), they are one matrix–matrix
product: each weight is loaded once and multiplied into a vector of ``LANES`` inputs, and
every lane is still its entry's sum in the same order, so the same bits as one pass per entry.

LLVM would not find this by itself (Numba compiles with its SLP vectorizer off, after
miscompilations: numba#8852), so :func:`dots` emits the vector instructions as LLVM IR
(``fmul`` and ``fadd`` on ``<LANES x double>``, no fused multiply-add, no reordering). Without
Numba it is the same loop in Python (:func:`dots_block`, :data:`UNITS` units, and
:func:`dots_one`).

The backward pass is row updates ``y[y0 : y0 + n] += α · x[x0 : x0 + n]`` of 10–40 elements
(a weight row's gradient, a row's share of the next layer's error). LLVM vectorizes that loop,
but for any length: a check that the rows do not overlap, 32 elements an iteration, the rest
one at a time. :func:`axpy` is the plain version, 4 at a time and then the rest: a backward
pass of 10-40-40-1 about 12 % cheaper here, the same bits (each element is one multiplication
and one addition either way).
"""

from __future__ import annotations

from adaptd.learner.jit import COMPILED

#: Entries per block: one 256-bit vector of doubles (AVX2; 512-bit vectors are split in two on
#: AMD's Zen 4, and window 5 has 4 older entries).
LANES = 4
#: Units per :func:`dots` call: 8 independent vector sums keep both adders busy.
UNITS = 8


def _dots_python(w, w0, ustep, vstep, n, b0, a, out, o0, units):  # type: ignore[no-untyped-def]
    for k in range(units):
        for e in range(LANES):
            t = 0.0 if b0 < 0 else w[b0 + k]
            for v in range(n):
                t += w[w0 + k * ustep + v * vstep] * a[v * LANES + e]
            out[o0 + k * LANES + e] = t


def _axpy_python(y, y0, alpha, x, x0, n):  # type: ignore[no-untyped-def]
    for i in range(n):
        y[y0 + i] += alpha * x[x0 + i]


if COMPILED:
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    def _dots_of(units: int, from_zero: bool):  # type: ignore[no-untyped-def]
        """``dots(w, w0, ustep, vstep, n, b0, a, out, o0)``: ``out[o0 + k·LANES + e]`` =
        ``w[b0 + k]`` (0.0 when ``from_zero``) + Σ_{v < n} ``w[w0 + k·ustep + v·vstep] ·
        a[v·LANES + e]`` (v in order) for each of ``units`` units ``k`` and lane ``e``: ``w``
        a θ row (weights row-major: a layer's sums with ``(ustep, vstep) = (fi, 1)``, its
        transposed product, the errors of its inputs, with ``(1, fi)``), ``a`` lanes
        innermost."""

        @intrinsic
        def dots(typingctx, w, w0, ustep, vstep, n, b0, a, out, o0):  # type: ignore[no-untyped-def]
            if not all(isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C"
                       and t.dtype == types.float64 for t in (w, a, out)):
                return None

            def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
                w0_, ustep_, vstep_, n_, b0_, o0_ = (
                    context.cast(builder, args[i], sig.args[i], types.intp)
                    for i in (1, 2, 3, 4, 5, 8))
                wp, ap, op = (context.make_array(sig.args[i])(context, builder, args[i]).data
                              for i in (0, 6, 7))
                intp = context.get_value_type(types.intp)
                vec = ir.VectorType(ir.DoubleType(), LANES)
                zeros = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)

                def splat(x):  # type: ignore[no-untyped-def]
                    one = builder.insert_element(ir.Constant(vec, ir.Undefined), x,
                                                 ir.Constant(ir.IntType(32), 0))
                    return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined), zeros)

                def vector_at(ptr, index):  # type: ignore[no-untyped-def]
                    return builder.bitcast(builder.gep(ptr, [index]), vec.as_pointer())

                sums, starts = [], []
                for k in range(units):
                    acc = cgutils.alloca_once(builder, vec)
                    if from_zero:
                        builder.store(ir.Constant(vec, [0.0] * LANES), acc)
                    else:
                        bias = builder.load(builder.gep(wp, [builder.add(b0_, intp(k))]))
                        builder.store(splat(bias), acc)
                    sums.append(acc)
                    starts.append(builder.add(w0_, builder.mul(ustep_, intp(k))))
                with cgutils.for_range(builder, n_) as loop:
                    v = loop.index
                    av = builder.load(vector_at(ap, builder.mul(v, intp(LANES))), align=8)
                    step = builder.mul(v, vstep_)
                    for acc, start in zip(sums, starts, strict=True):
                        wk = builder.load(builder.gep(wp, [builder.add(start, step)]))
                        builder.store(builder.fadd(builder.load(acc),
                                                   builder.fmul(splat(wk), av)), acc)
                for k, acc in enumerate(sums):
                    at = builder.add(o0_, intp(k * LANES))
                    builder.store(builder.load(acc), vector_at(op, at), align=8)
                return context.get_dummy_value()

            return types.void(w, w0, ustep, vstep, n, b0, a, out, o0), codegen

        return dots

    @intrinsic
    def axpy(typingctx, y, y0, alpha, x, x0, n):  # type: ignore[no-untyped-def]
        """``y[y0 + i] += alpha · x[x0 + i]`` for ``i < n`` (``y``, ``x`` 1-D C float64)."""
        if not all(isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C"
                   and t.dtype == types.float64 for t in (y, x)):
            return None

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            y0_, x0_, n_ = (context.cast(builder, args[i], sig.args[i], types.intp)
                            for i in (1, 4, 5))
            alpha_ = context.cast(builder, args[2], sig.args[2], types.float64)
            yp, xp = (context.make_array(sig.args[i])(context, builder, args[i]).data
                      for i in (0, 3))
            intp = context.get_value_type(types.intp)
            vec = ir.VectorType(ir.DoubleType(), LANES)
            one = builder.insert_element(ir.Constant(vec, ir.Undefined), alpha_,
                                         ir.Constant(ir.IntType(32), 0))
            alphas = builder.shuffle_vector(
                one, ir.Constant(vec, ir.Undefined),
                ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))
            chunks = builder.udiv(n_, intp(LANES))
            with cgutils.for_range(builder, chunks) as loop:
                i = builder.mul(loop.index, intp(LANES))
                yq = builder.bitcast(builder.gep(yp, [builder.add(y0_, i)]), vec.as_pointer())
                xq = builder.bitcast(builder.gep(xp, [builder.add(x0_, i)]), vec.as_pointer())
                builder.store(builder.fadd(builder.load(yq, align=8),
                                           builder.fmul(alphas, builder.load(xq, align=8))),
                              yq, align=8)
            with cgutils.for_range_slice(builder, builder.mul(chunks, intp(LANES)), n_,
                                         intp(1)) as (i, _):
                yq = builder.gep(yp, [builder.add(y0_, i)])
                xi = builder.load(builder.gep(xp, [builder.add(x0_, i)]))
                builder.store(builder.fadd(builder.load(yq), builder.fmul(alpha_, xi)), yq)
            return context.get_dummy_value()

        return types.void(y, y0, alpha, x, x0, n), codegen

    dots_block = _dots_of(UNITS, False)
    dots_one = _dots_of(1, False)
    tdots_block = _dots_of(UNITS, True)
    tdots_one = _dots_of(1, True)
else:  # pragma: no cover - numba is a dependency
    def dots_block(w, w0, ustep, vstep, n, b0, a, out, o0):  # type: ignore[no-untyped-def]
        _dots_python(w, w0, ustep, vstep, n, b0, a, out, o0, UNITS)

    def dots_one(w, w0, ustep, vstep, n, b0, a, out, o0):  # type: ignore[no-untyped-def]
        _dots_python(w, w0, ustep, vstep, n, b0, a, out, o0, 1)

    def tdots_block(w, w0, ustep, vstep, n, b0, a, out, o0):  # type: ignore[no-untyped-def]
        _dots_python(w, w0, ustep, vstep, n, -1, a, out, o0, UNITS)

    def tdots_one(w, w0, ustep, vstep, n, b0, a, out, o0):  # type: ignore[no-untyped-def]
        _dots_python(w, w0, ustep, vstep, n, -1, a, out, o0, 1)

    axpy = _axpy_python  # type: ignore[assignment]
