// bench/micro.cpp: Google Benchmark microbenchmarks of pnn's building blocks on the shapes of the example
// MLP (784-256-128-10) and CNN (conv 5x5 1->16, conv 5x5 16->32, max-pool 2) at batch 64:
//
//   BM_DenseForward / BM_DenseBackward      Dense 784->256 and 256->128, through a one-layer model
//   BM_Conv2DForward / BM_Conv2DBackward    the CNN's two convolutions (the first without input gradient,
//                                           as in training: nothing needs the image's gradient)
//   BM_MaxPool2D{Forward,Backward}          2x2 pooling of the first convolution's output
//   BM_ElementwiseFused / _Unfused          y = relu(x * a + b) * c on 4M floats, in one expression versus
//                                           through three temporaries; bytes/s counts the 8 bytes per
//                                           element the fused form must move, so the two rates compare
//                                           directly and the unfused one shows its extra memory traffic
//   BM_Gemm/pnn, BM_Gemm/eigen              pnn::gemm versus Eigen's product on the same row-major
//                                           storage, for every product the layers above run
//
// Threads: PNN_BENCH_THREADS (default 1) threads for matrix products, like --threads of the examples.
// Run: build-bench/bench/micro [--benchmark_filter=REGEX] [--benchmark_repetitions=5]
#include <benchmark/benchmark.h>

#include <pnn/cpu/simd.hpp>  // Eigen, under the warning fix that must precede it
#include <cstdlib>
#include <string>
#include <vector>

#include <pnn/cpu/linalg.hpp>
#include <pnn/core/random.hpp>
#include <pnn/layers/conv2d.hpp>
#include <pnn/layers/dense.hpp>
#include <pnn/layers/max_pool2d.hpp>
#include <pnn/model/sequential.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

constexpr pnn::index batch = 64;

pnn::Tensor<float, 2> random_matrix(pnn::index rows, pnn::index columns, std::uint64_t seed) {
  pnn::Tensor<float, 2> matrix(pnn::Extents<2>{rows, columns});
  pnn::Generator random(seed);
  for (pnn::index i = 0; i < matrix.size(); ++i) matrix[i] = random.uniform<float>(-1.0f, 1.0f);
  return matrix;
}

// A model of one layer (Model = BasicSequential<float, cpu, Input<...>, Layer>) with a batch of random
// inputs and output gradients: forward and backward run through the model as they do in training.
template <class Model>
struct OneLayer {
  static constexpr pnn::index inputs = Model::input_shape::size;
  static constexpr pnn::index outputs = Model::output_shape::size;
  Model model{1};
  pnn::Tensor<float, 2> x = random_matrix(batch, inputs, 2);
  pnn::Tensor<float, 2> dy = random_matrix(batch, outputs, 3);
  pnn::Tensor<float, 2> dx = pnn::Tensor<float, 2>(pnn::Extents<2>{batch, inputs});
  typename Model::Trace trace;

  void forward() { benchmark::DoNotOptimize(model.forward(x.view(), trace, true).data()); }
  void backward(bool input_gradient) {
    model.backward(dy.view(), input_gradient ? dx.view() : pnn::TensorView<float, 2>{}, trace);
    benchmark::DoNotOptimize(model.parameter_gradients().data());
    benchmark::ClobberMemory();
  }
};

void set_rates(benchmark::State& state, double flops_per_iteration) {
  state.SetItemsProcessed(state.iterations() * batch);  // samples/s
  state.counters["FLOP/s"] = benchmark::Counter(flops_per_iteration, benchmark::Counter::kIsIterationInvariantRate,
                                                benchmark::Counter::kIs1000);
}

// ----- layers ---------------------------------------------------------------------------------------------
template <pnn::index In, pnn::index Out>
using DenseModel = pnn::BasicSequential<float, pnn::cpu, pnn::Input<In>, pnn::Dense<Out>>;

template <pnn::index In, pnn::index Out>
void BM_DenseForward(benchmark::State& state) {
  OneLayer<DenseModel<In, Out>> bench;
  for (auto _ : state) bench.forward();
  set_rates(state, 2.0 * batch * In * Out);
}
template <pnn::index In, pnn::index Out>
void BM_DenseBackward(benchmark::State& state) {
  OneLayer<DenseModel<In, Out>> bench;
  bench.forward();
  for (auto _ : state) bench.backward(true);
  set_rates(state, 4.0 * batch * In * Out);  // dW and dx
}
BENCHMARK(BM_DenseForward<784, 256>)->Name("BM_DenseForward/784x256");
BENCHMARK(BM_DenseBackward<784, 256>)->Name("BM_DenseBackward/784x256");
BENCHMARK(BM_DenseForward<256, 128>)->Name("BM_DenseForward/256x128");
BENCHMARK(BM_DenseBackward<256, 128>)->Name("BM_DenseBackward/256x128");

using Conv1 = pnn::BasicSequential<float, pnn::cpu, pnn::Input<1, 28, 28>, pnn::Conv2D<16, 5, pnn::Pad<2>>>;
using Conv2 = pnn::BasicSequential<float, pnn::cpu, pnn::Input<16, 14, 14>, pnn::Conv2D<32, 5, pnn::Pad<2>>>;

// Multiply-adds of one sample through the model's only convolution: output elements x patch size.
template <class Model>
constexpr double convolution_macs() {
  using Layer = typename Model::Stack::template layer_type<0>;
  return static_cast<double>(Model::output_shape::size) * static_cast<double>(Layer::patch);
}

template <class Model>
void BM_Conv2DForward(benchmark::State& state) {
  OneLayer<Model> bench;
  for (auto _ : state) bench.forward();
  set_rates(state, 2.0 * batch * convolution_macs<Model>());
}
template <class Model>
void BM_Conv2DBackward(benchmark::State& state) {
  const bool input_gradient = state.range(0) != 0;
  OneLayer<Model> bench;
  bench.forward();
  for (auto _ : state) bench.backward(input_gradient);
  set_rates(state, (input_gradient ? 4.0 : 2.0) * batch * convolution_macs<Model>());
}
BENCHMARK(BM_Conv2DForward<Conv1>)->Name("BM_Conv2DForward/1x28x28->16");
BENCHMARK(BM_Conv2DBackward<Conv1>)->Name("BM_Conv2DBackward/1x28x28->16/input_gradient")->Arg(0);
BENCHMARK(BM_Conv2DForward<Conv2>)->Name("BM_Conv2DForward/16x14x14->32");
BENCHMARK(BM_Conv2DBackward<Conv2>)->Name("BM_Conv2DBackward/16x14x14->32/input_gradient")->Arg(1);

using Pool = pnn::BasicSequential<float, pnn::cpu, pnn::Input<16, 28, 28>, pnn::MaxPool2D<2>>;

void BM_MaxPool2DForward(benchmark::State& state) {
  OneLayer<Pool> bench;
  for (auto _ : state) bench.forward();
  state.SetItemsProcessed(state.iterations() * batch);
  state.SetBytesProcessed(state.iterations() * batch * (Pool::input_shape::size + Pool::output_shape::size) *
                          static_cast<std::int64_t>(sizeof(float)));
}
void BM_MaxPool2DBackward(benchmark::State& state) {
  OneLayer<Pool> bench;
  bench.forward();
  for (auto _ : state) bench.backward(true);
  state.SetItemsProcessed(state.iterations() * batch);
  state.SetBytesProcessed(state.iterations() * batch * (Pool::input_shape::size + Pool::output_shape::size) *
                          static_cast<std::int64_t>(sizeof(float)));
}
BENCHMARK(BM_MaxPool2DForward)->Name("BM_MaxPool2DForward/16x28x28");
BENCHMARK(BM_MaxPool2DBackward)->Name("BM_MaxPool2DBackward/16x28x28");

// ----- fused versus unfused element-wise expressions ---------------------------------------------------------
constexpr pnn::index elementwise_size = pnn::index{1} << 22;  // 4M floats, 16 MB: well past the caches
constexpr float scale = 1.5f, shift = -0.25f, gain = 0.5f;

// Both variants are charged the 8 bytes per element of the fused form (read x, write y), so bytes/s is
// useful bandwidth; "moved/s" counts what each variant actually streams through memory.
void set_elementwise_rates(benchmark::State& state, double bytes_moved_per_element) {
  state.SetBytesProcessed(state.iterations() * elementwise_size * 2 * static_cast<std::int64_t>(sizeof(float)));
  state.counters["moved/s"] =
      benchmark::Counter(bytes_moved_per_element * elementwise_size, benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::kIs1024);
}

void BM_ElementwiseFused(benchmark::State& state) {
  const pnn::Tensor<float, 1> x = random_matrix(1, elementwise_size, 4).reshape(pnn::Extents<1>{elementwise_size});
  pnn::Tensor<float, 1> y(pnn::Extents<1>{elementwise_size});
  for (auto _ : state) {
    y = pnn::relu(x * scale + shift) * gain;
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_elementwise_rates(state, 2 * sizeof(float));
}
void BM_ElementwiseUnfused(benchmark::State& state) {
  const pnn::Tensor<float, 1> x = random_matrix(1, elementwise_size, 4).reshape(pnn::Extents<1>{elementwise_size});
  pnn::Tensor<float, 1> y(pnn::Extents<1>{elementwise_size});
  pnn::Tensor<float, 1> scaled(x.shape()), shifted(x.shape()), rectified(x.shape());
  for (auto _ : state) {
    scaled = x * scale;
    shifted = scaled + shift;
    rectified = pnn::relu(shifted);
    y = rectified * gain;
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_elementwise_rates(state, 8 * sizeof(float));  // four passes, each reading one array and writing one
}
BENCHMARK(BM_ElementwiseFused)->Name("BM_ElementwiseFused/relu(x*a+b)*c/4M");
BENCHMARK(BM_ElementwiseUnfused)->Name("BM_ElementwiseUnfused/relu(x*a+b)*c/4M");

// ----- gemm ---------------------------------------------------------------------------------------------------
// C (m x n) = op(A) op(B), with the transposes the layers use. The stored A is m x k (k x m if
// transposed), the stored B k x n (n x k if transposed).
struct GemmShape {
  const char* name;
  pnn::index m, n, k;
  bool transpose_a, transpose_b;
};

// The rows of the columns matrix one chunk of a convolution holds (Conv2D processes the batch in chunks
// whose columns stay in L2).
template <class Model>
constexpr pnn::index convolution_chunk_rows() {
  using Layer = typename Model::Stack::template layer_type<0>;
  const pnn::index sample_bytes = static_cast<pnn::index>(sizeof(float)) * Layer::positions * Layer::patch;
  const pnn::index samples = std::clamp<pnn::index>(Layer::columns_budget_bytes / sample_bytes, 1, batch);
  return samples * Layer::positions;
}
template <class Model>
constexpr pnn::index convolution_patch() {
  return Model::Stack::template layer_type<0>::patch;
}

const std::vector<GemmShape>& gemm_shapes() {
  constexpr pnn::index rows1 = convolution_chunk_rows<Conv1>(), rows2 = convolution_chunk_rows<Conv2>();
  constexpr pnn::index patch1 = convolution_patch<Conv1>(), patch2 = convolution_patch<Conv2>();
  static const std::vector<GemmShape> shapes{
      {"dense784x256.forward(x*W^T)", batch, 256, 784, false, true},
      {"dense784x256.weight_grad(dy^T*x)", 256, 784, batch, true, false},
      {"dense784x256.input_grad(dy*W)", batch, 784, 256, false, false},
      {"dense256x128.forward(x*W^T)", batch, 128, 256, false, true},
      {"dense256x128.weight_grad(dy^T*x)", 128, 256, batch, true, false},
      {"conv1.forward(cols*W^T)", rows1, 16, patch1, false, true},
      {"conv1.weight_grad(dy^T*cols)", 16, patch1, rows1, true, false},
      {"conv2.forward(cols*W^T)", rows2, 32, patch2, false, true},
      {"conv2.weight_grad(dy^T*cols)", 32, patch2, rows2, true, false},
      {"conv2.input_grad(dy*W)", rows2, patch2, 32, false, false},
  };
  return shapes;
}

struct GemmOperands {
  pnn::Tensor<float, 2> a, b, c;
  explicit GemmOperands(const GemmShape& s)
      : a(s.transpose_a ? random_matrix(s.k, s.m, 5) : random_matrix(s.m, s.k, 5)),
        b(s.transpose_b ? random_matrix(s.n, s.k, 6) : random_matrix(s.k, s.n, 6)),
        c(pnn::Extents<2>{s.m, s.n}) {}
};

void BM_GemmPnn(benchmark::State& state, GemmShape shape) {
  GemmOperands operands(shape);
  for (auto _ : state) {
    pnn::gemm<float>(operands.a.view(), operands.b.view(), operands.c.view(),
                     {.transpose_a = shape.transpose_a, .transpose_b = shape.transpose_b});
    benchmark::DoNotOptimize(operands.c.data());
    benchmark::ClobberMemory();
  }
  state.counters["FLOP/s"] = benchmark::Counter(
      2.0 * shape.m * shape.n * shape.k, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void BM_GemmEigen(benchmark::State& state, GemmShape shape) {
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  GemmOperands operands(shape);
  const Eigen::Map<const RowMajor> a(operands.a.data(), operands.a.dim(0), operands.a.dim(1));
  const Eigen::Map<const RowMajor> b(operands.b.data(), operands.b.dim(0), operands.b.dim(1));
  Eigen::Map<RowMajor> c(operands.c.data(), shape.m, shape.n);
  for (auto _ : state) {
    if (!shape.transpose_a && !shape.transpose_b) c.noalias() = a * b;
    else if (!shape.transpose_a) c.noalias() = a * b.transpose();
    else if (!shape.transpose_b) c.noalias() = a.transpose() * b;
    else c.noalias() = a.transpose() * b.transpose();
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  state.counters["FLOP/s"] = benchmark::Counter(
      2.0 * shape.m * shape.n * shape.k, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void register_gemm_benchmarks() {
  for (const GemmShape& shape : gemm_shapes()) {
    const std::string size = std::to_string(shape.m) + "x" + std::to_string(shape.n) + "x" + std::to_string(shape.k);
    benchmark::RegisterBenchmark(("BM_Gemm/pnn/" + std::string(shape.name) + "/" + size).c_str(), BM_GemmPnn, shape);
    benchmark::RegisterBenchmark(("BM_Gemm/eigen/" + std::string(shape.name) + "/" + size).c_str(), BM_GemmEigen,
                                 shape);
  }
}

int threads_from_environment() {
  const char* text = std::getenv("PNN_BENCH_THREADS");
  const int threads = text && *text ? std::atoi(text) : 1;
  return threads > 0 ? threads : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = threads_from_environment();
  Eigen::setNbThreads(threads);
#if defined(_OPENMP)
  omp_set_num_threads(threads);
#endif
  register_gemm_benchmarks();
  benchmark::AddCustomContext("pnn_threads", std::to_string(threads));
  benchmark::AddCustomContext("pnn_gemm_kernel", pnn::cpu_gemm::kernel_name());
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
