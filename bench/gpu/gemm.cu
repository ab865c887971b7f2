// bench/gpu/gemm.cu: pnn::gemm on cuda against cuBLAS called directly, on the same matrices and stream,
// for every product the example MLP and CNN run in a training step (batch 64 and 512) and 4096^3.
//
//   build-gpu/gemm [--batches 64,512] [--samples 20] [--repeats 50] [--tf32]
//
// Per shape, three callers of the same product C = op(A) op(B) (+ C), float, row-major as pnn stores it:
//   pnn       pnn::gemm<float>(a, b, c, options)          (cublasGemmEx through pnn's handle, plus pnn's checks)
//   sgemm     cublasSgemm on a handle of this program, bound to pnn's stream, with the operands swapped as
//             pnn does (row-major C^T = op(B)^T op(A)^T)
//   gemm_ex   cublasGemmEx with exactly pnn's arguments, on this program's handle
// each timed two ways:
//   launch    --repeats back-to-back calls from the host between two CUDA events: what an eager step pays,
//             host overhead included when the kernel is shorter than the call
//   graph     the same calls captured into a CUDA graph and replayed: the GPU's time alone
// median over --samples. ratio = pnn / sgemm (goal: at most 1.05). One JSON line per shape.
//
// CNN shapes follow Conv2D: the batch is processed in chunks whose im2col matrix fits
// Conv2D::layer::columns_budget_bytes ("chunk" rows below); the "whole batch" rows show the product a
// single chunk per batch would run.
#include <cublas_v2.h>

#include <string>
#include <vector>

#include "pnn/cuda/cuda.hpp"

#include "common.cuh"

namespace {

struct Product {
  std::string name;
  long m, n, k;
  bool transpose_a, transpose_b;
  double beta;
};

template <class ConvLayer>
long chunk_samples(long batch) {
  const long sample_bytes = static_cast<long>(sizeof(float)) * ConvLayer::positions * ConvLayer::patch;
  return std::clamp<long>(ConvLayer::columns_budget_bytes / sample_bytes, 1, batch);
}

using Conv1 = pnn::Conv2D<16, 5, pnn::Pad<2>>::layer<float, pnn::cuda, pnn::Shape<1, 28, 28>>;
using Conv2 = pnn::Conv2D<32, 5, pnn::Pad<2>>::layer<float, pnn::cuda, pnn::Shape<16, 14, 14>>;

void add_dense(std::vector<Product>& products, const std::string& name, long batch, long in, long out,
               bool input_gradient) {
  products.push_back({name + ".forward", batch, out, in, false, true, 1});
  products.push_back({name + ".weight_gradient", out, in, batch, true, false, 1});
  if (input_gradient) products.push_back({name + ".input_gradient", batch, in, out, false, false, 0});
}

template <class Conv>
void add_conv(std::vector<Product>& products, const std::string& name, long rows, bool input_gradient) {
  const long filters = Conv::output_shape::dims[0], patch = Conv::patch;
  products.push_back({name + ".forward", rows, filters, patch, false, true, 1});
  products.push_back({name + ".weight_gradient", filters, patch, rows, true, false, 1});
  if (input_gradient) products.push_back({name + ".input_gradient", rows, patch, filters, false, false, 0});
}

std::vector<Product> products(const std::vector<long>& batches) {
  std::vector<Product> list;
  for (long b : batches) {
    const std::string mlp = "mlp.b" + std::to_string(b) + ".", cnn = "cnn.b" + std::to_string(b) + ".";
    add_dense(list, mlp + "dense784x256", b, 784, 256, false);
    add_dense(list, mlp + "dense256x128", b, 256, 128, true);
    add_dense(list, mlp + "dense128x10", b, 128, 10, true);
    add_conv<Conv1>(list, cnn + "conv1.chunk" + std::to_string(chunk_samples<Conv1>(b)),
                    chunk_samples<Conv1>(b) * Conv1::positions, false);
    add_conv<Conv2>(list, cnn + "conv2.chunk" + std::to_string(chunk_samples<Conv2>(b)),
                    chunk_samples<Conv2>(b) * Conv2::positions, true);
    add_conv<Conv1>(list, cnn + "conv1.whole_batch", b * Conv1::positions, false);
    add_conv<Conv2>(list, cnn + "conv2.whole_batch", b * Conv2::positions, true);
    add_dense(list, cnn + "dense1568x128", b, 1568, 128, true);
    add_dense(list, cnn + "dense128x10", b, 128, 10, true);
  }
  list.push_back({"square4096", 4096, 4096, 4096, false, false, 0});
  return list;
}

void check(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw pnn::CudaError(std::string(call) + " failed: " + cublasGetStatusString(status));
}

// Times `repeats` calls of body() back to back (launch) and as a replayed CUDA graph (graph).
template <class Body>
std::pair<bench::Timing, bench::Timing> time_both(cudaStream_t stream, int samples, int repeats, Body&& body) {
  const bench::Timing launch = bench::time_batched(stream, 3, samples, repeats, body);
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t executable = nullptr;
  PNN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  try {
    for (int r = 0; r < repeats; ++r) body();
  } catch (...) {
    (void)cudaStreamEndCapture(stream, &graph);
    if (graph) (void)cudaGraphDestroy(graph);
    throw;
  }
  PNN_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  PNN_CUDA_CHECK(cudaGraphInstantiate(&executable, graph, 0));
  bench::Timing replay =
      bench::time_calls(stream, 3, samples, [&](int) { PNN_CUDA_CHECK(cudaGraphLaunch(executable, stream)); });
  PNN_CUDA_CHECK(cudaGraphExecDestroy(executable));
  PNN_CUDA_CHECK(cudaGraphDestroy(graph));
  replay.median_ms /= repeats;
  replay.p10_ms /= repeats;
  replay.p90_ms /= repeats;
  replay.wall_ms /= repeats;
  return {launch, replay};
}

}  // namespace

int main(int argc, char** argv) {
  return bench::guarded_main("gemm", [&] {
    const bench::Arguments arguments(argc, argv, {{"batches", "64,512"}, {"samples", "20"}, {"repeats", "50"}},
                                     {"tf32"});
    bench::require_device();
    const bool tf32 = arguments.flag("tf32");
    pnn::cuda_settings().allow_tf32 = tf32;
    const int samples = static_cast<int>(arguments.number("samples"));
    const int repeats = static_cast<int>(arguments.number("repeats"));
    cudaStream_t stream = pnn::cuda_stream();
    cublasHandle_t handle = nullptr;
    check(cublasCreate(&handle), "cublasCreate");
    check(cublasSetStream(handle, stream), "cublasSetStream");
    if (tf32) check(cublasSetMathMode(handle, CUBLAS_TF32_TENSOR_OP_MATH), "cublasSetMathMode");
    (void)pnn::cuda_detail::cublas_handle(pnn::cuda_detail::current_device());  // created before any capture
    bench::Json().add("program", "gemm").add("device", bench::device_name()).add("tf32", tf32).print();

    for (const Product& p : products(arguments.numbers("batches"))) {
      try {
        using Matrix = pnn::Tensor<float, 2, pnn::cuda>;
        Matrix a(p.transpose_a ? pnn::Extents<2>{p.k, p.m} : pnn::Extents<2>{p.m, p.k});
        Matrix b(p.transpose_b ? pnn::Extents<2>{p.n, p.k} : pnn::Extents<2>{p.k, p.n});
        Matrix c(pnn::Extents<2>{p.m, p.n});
        a.view() = a.view() * 0.0f + 0.01f;
        b.view() = b.view() * 0.0f + 0.02f;
        const pnn::GemmOptions options{.transpose_a = p.transpose_a, .transpose_b = p.transpose_b, .beta = p.beta};
        const float alpha = 1, beta = static_cast<float>(p.beta);
        const cublasOperation_t op_a = p.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
        const cublasOperation_t op_b = p.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
        const int m = static_cast<int>(p.m), n = static_cast<int>(p.n), k = static_cast<int>(p.k);
        const int lda = static_cast<int>(a.dim(1)), ldb = static_cast<int>(b.dim(1));

        const auto pnn_times =
            time_both(stream, samples, repeats, [&] { pnn::gemm<float>(a.view(), b.view(), c.view(), options); });
        const auto sgemm_times = time_both(stream, samples, repeats, [&] {
          check(cublasSgemm(handle, op_b, op_a, n, m, k, &alpha, b.data(), ldb, a.data(), lda, &beta, c.data(), n),
                "cublasSgemm");
        });
        const auto gemm_ex_times = time_both(stream, samples, repeats, [&] {
          check(cublasGemmEx(handle, op_b, op_a, n, m, k, &alpha, b.data(), CUDA_R_32F, ldb, a.data(), CUDA_R_32F, lda,
                             &beta, c.data(), CUDA_R_32F, n, tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F,
                             CUBLAS_GEMM_DEFAULT),
                "cublasGemmEx");
        });
        const double flops = 2.0 * static_cast<double>(p.m) * static_cast<double>(p.n) * static_cast<double>(p.k);
        bench::Json()
            .add("benchmark", "gemm")
            .add("shape", p.name)
            .add("m", p.m)
            .add("n", p.n)
            .add("k", p.k)
            .add("transpose_a", p.transpose_a)
            .add("transpose_b", p.transpose_b)
            .add("beta", p.beta)
            .add("pnn_launch_ms", pnn_times.first.median_ms)
            .add("sgemm_launch_ms", sgemm_times.first.median_ms)
            .add("gemm_ex_launch_ms", gemm_ex_times.first.median_ms)
            .add("pnn_graph_ms", pnn_times.second.median_ms)
            .add("sgemm_graph_ms", sgemm_times.second.median_ms)
            .add("gemm_ex_graph_ms", gemm_ex_times.second.median_ms)
            .add("ratio_launch", pnn_times.first.median_ms / sgemm_times.first.median_ms)
            .add("ratio_graph", pnn_times.second.median_ms / sgemm_times.second.median_ms)
            .add("pnn_graph_tflops", flops / (pnn_times.second.median_ms * 1e-3) / 1e12)
            .print();
      } catch (const std::exception& error) {
        bench::Json().add("benchmark", "gemm").add("shape", p.name).add("error", error.what()).print();
      }
    }
    check(cublasDestroy(handle), "cublasDestroy");
  });
}
