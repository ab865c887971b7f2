// pnn/cuda/graph.cuh: CudaGraphStep, a whole training step (zero the gradients, forward, loss, backward,
// optimiser update) captured once into a CUDA graph and replayed with one launch per step.
//
//   using Net = pnn::Sequential<pnn::Input<784>, pnn::Dense<256>, pnn::ReLU, pnn::Dense<10>>::on<pnn::cuda>;
//   Net model(/*seed=*/1);
//   pnn::Optimizer<pnn::SGD, float, pnn::cuda> optimizer({.learning_rate = 0.05, .momentum = 0.9});
//   pnn::CudaGraphStep step(model, optimizer, /*batch=*/64);           // softmax cross-entropy by default
//   for (...) step.run(images, labels);   // device or host views of one batch: copied into the step's buffers
//   float loss = step.loss();             // the last step's mean loss: the only synchronisation
//
// Why: for small layers the host's launches, not the arithmetic, set an eager step's time; a replay
// launches everything at once and keeps the loss on the device. What cannot be captured is a compile-time
// error (Adam, LARS, Dropout); what can only be seen while capturing (memory kept or released inside the
// step, a synchronisation with the host) fails the capture with a CudaError that says so. A change of
// optimizer.rule, of cuda_settings().allow_tf32 or an optimizer.reset() captures again; steps() counts the
// replays, which Optimizer::step never sees. The model and optimiser must outlive the step and stay put
// (the graph holds their addresses); between replays the model may train eagerly with any batch. While
// run() captures, no other thread may enqueue work on pnn's stream. docs/cuda.md, "A training step as one
// graph", says how and why in full.
#pragma once

#include <concepts>
#include <cstdint>
#include <type_traits>

#include "pnn/core/tensor.hpp"
#include "pnn/cuda/executor.cuh"
#include "pnn/cuda/linalg.cuh"
#include "pnn/cuda/loss.cuh"  // CudaDeviceLoss, CudaLossScratch
#include "pnn/cuda/memory.cuh"
#include "pnn/cuda/runtime.cuh"
#include "pnn/layers/dropout.hpp"
#include "pnn/layers/layer.hpp"
#include "pnn/layers/residual.hpp"
#include "pnn/loss/mean_squared_error.hpp"
#include "pnn/loss/softmax_cross_entropy.hpp"
#include "pnn/model/sequential.hpp"
#include "pnn/optim/adam.hpp"
#include "pnn/optim/lars.hpp"
#include "pnn/optim/optimizer.hpp"
#include "pnn/optim/sgd.hpp"

namespace pnn {

// ----- what can be captured ------------------------------------------------------------------------------

// An update rule whose update() enqueues only device work whose arguments do not change from step to step
// (no host reduction, no step-dependent scalar). Specialise as true for such a rule of your own; it must
// also be equality-comparable, so a changed hyper-parameter triggers a new capture.
template <class Rule>
inline constexpr bool cuda_graph_capturable_rule = false;
template <>
inline constexpr bool cuda_graph_capturable_rule<SGD> = true;

// A layer spec whose forward and backward enqueue only device work (true unless said otherwise).
template <class Spec>
inline constexpr bool cuda_graph_capturable_layer = true;
template <index Percent>
inline constexpr bool cuda_graph_capturable_layer<Dropout<Percent>> = Percent == 0;
template <class... Specs>
inline constexpr bool cuda_graph_capturable_layer<Residual<Specs...>> = (cuda_graph_capturable_layer<Specs> && ...);
template <class... Specs>
inline constexpr bool cuda_graph_capturable_layer<Shortcut<Specs...>> = (cuda_graph_capturable_layer<Specs> && ...);

namespace cuda_detail {
template <class Model>
inline constexpr bool is_sequential_model = false;
template <class T, class D, class First, class... Rest>
inline constexpr bool is_sequential_model<BasicSequential<T, D, First, Rest...>> = true;

template <class Model>
inline constexpr bool layers_capturable = false;
template <class T, class D, class First, class... Rest>
inline constexpr bool layers_capturable<BasicSequential<T, D, First, Rest...>> =
    (cuda_graph_capturable_layer<Rest> && ...);

// The owning tensor behind a loss's target view type (TensorView<const int32_t, 1, cuda> -> Tensor<int32_t, 1, cuda>).
template <class View>
struct owning_tensor;
template <class E, std::size_t R, class D>
struct owning_tensor<TensorView<const E, R, D>> {
  using type = Tensor<E, R, D>;
};
}  // namespace cuda_detail

// ----- the captured step ---------------------------------------------------------------------------------

template <class Model, class Rule, class LossFunction = SoftmaxCrossEntropy>
class CudaGraphStep {
  static_assert(cuda_detail::is_sequential_model<Model>,
                "CudaGraphStep<Model, ...>: Model must be a pnn::Sequential (BasicSequential) model type");
  static_assert(std::is_same_v<typename Model::device, cuda>,
                "CudaGraphStep captures a CUDA graph: the model must live on the GPU (Net::on<pnn::cuda>)");
  static_assert(!std::is_same_v<Rule, LARS>,
                "CudaGraphStep cannot capture LARS: its trust ratio needs each layer's weight and gradient norms on "
                "the host every step, a synchronisation a CUDA graph cannot contain. Train LARS with "
                "pnn::train_step(model, ...)");
  static_assert(!std::is_same_v<Rule, Adam>,
                "CudaGraphStep cannot capture Adam: its bias correction depends on the step number, which a "
                "captured graph would freeze at the step it was captured in. Train Adam with "
                "pnn::train_step(model, ...), or capture SGD");
  static_assert(std::is_same_v<Rule, LARS> || std::is_same_v<Rule, Adam> || cuda_graph_capturable_rule<Rule>,
                "CudaGraphStep: this update rule is not known to be capturable. If its update() enqueues only "
                "device work whose arguments do not change between steps, specialise "
                "pnn::cuda_graph_capturable_rule<Rule> = true (pnn/cuda/graph.cuh)");
  static_assert(!cuda_graph_capturable_rule<Rule> || std::equality_comparable<Rule>,
                "CudaGraphStep: a capturable update rule must be equality-comparable (define operator==), so a "
                "changed hyper-parameter is noticed and the step captured again");
  static_assert(cuda_detail::layers_capturable<Model>,
                "CudaGraphStep cannot capture a model with Dropout: its masks are drawn on the host every step, "
                "which a captured graph would replay unchanged. Train it with pnn::train_step(model, ...)");

 public:
  using value_type = typename Model::value_type;
  using T = value_type;
  using target_view = typename LossFunction::template target_type<T, cuda>;
  using target_tensor = typename cuda_detail::owning_tensor<target_view>::type;
  using target_element = typename target_tensor::value_type;
  static constexpr std::size_t target_rank = target_tensor::rank;
  static constexpr index input_features = Model::input_shape::size;
  static constexpr index output_features = Model::output_shape::size;
  static_assert(target_rank == 1 || target_rank == 2,
                "CudaGraphStep: a loss's targets must be one value per sample (rank 1) or one row per sample (rank 2)");

  // Sets up the step's buffers for batches of `batch` samples; captures nothing yet (the first run() does).
  CudaGraphStep(Model& model, Optimizer<Rule, T, cuda>& optimizer, index batch, LossFunction loss = {})
      : model_(model),
        optimizer_(optimizer),
        loss_(loss),
        batch_(batch),
        device_(model.parameter_values().size() > 0 ? cuda_detail::device_of(model.parameter_values().data())
                                                    : cuda_detail::current_device()) {
    PNN_CHECK(batch > 0 && batch < cuda_detail::no_invalid_row, ArgumentError,
              "CudaGraphStep: the batch must hold between 1 and ", cuda_detail::no_invalid_row - 1, " samples, got ",
              batch);
    const cuda_detail::DeviceGuard guard(device_);  // the buffers live on the model's device
    inputs_ = Tensor<T, 2, cuda>(Extents<2>{batch, input_features});
    targets_ = target_tensor(target_extents(batch));
    trace_.output_gradient = Tensor<T, 2, cuda>(Extents<2>{batch, output_features});
    scratch_ = CudaLossScratch<T>(batch);
    PNN_CUDA_CHECK(cudaMemsetAsync(scratch_.first_invalid_row.data(), cuda_detail::no_invalid_row_byte, sizeof(int),
                                   cuda_stream(device_)));
  }
  CudaGraphStep(const CudaGraphStep&) = delete;
  CudaGraphStep& operator=(const CudaGraphStep&) = delete;
  ~CudaGraphStep() {
    if (executable_) cuda_detail::report(cudaGraphExecDestroy(executable_), "cudaGraphExecDestroy");
  }

  // The step's own input and target buffers: fill them (on pnn's stream, or before it) and call run().
  TensorView<T, 2, cuda> inputs() { return inputs_.view(); }
  TensorView<target_element, target_rank, cuda> targets() { return targets_.view(); }

  // Copies one batch (device views, or host views) into the step's buffers and runs the step.
  void run(TensorView<const T, 2, cuda> inputs, TensorView<const target_element, target_rank, cuda> targets) {
    stage(inputs, targets);
    run();
  }
  void run(TensorView<const T, 2, cpu> inputs, TensorView<const target_element, target_rank, cpu> targets) {
    stage(inputs, targets);
    run();
  }

  // One training step on what the buffers hold: eagerly the first time (it sizes every buffer), then
  // captured once, then one graph launch per call. Never waits for the device, except while capturing
  // (run() with host views does: copying from the host waits until the host buffer may be reused).
  // After optimizer.reset() the optimiser's state (momentum) is gone and the graph's addresses with it:
  // the graph is dropped, and the step runs eagerly again (which allocates the new state, unless eager
  // steps since the reset did) and is captured anew.
  void run() {
    const cuda_detail::DeviceGuard guard(device_);
    if (executable_ && optimizer_.resets() != captured_resets_) {
      cuda_detail::report(cudaGraphExecDestroy(executable_), "cudaGraphExecDestroy");
      executable_ = nullptr;
    }
    if (!executable_) {
      enqueue_step();
      ++steps_;
      capture();
      return;
    }
    if (!(optimizer_.rule == captured_rule_) || cuda_settings().allow_tf32 != captured_tf32_) capture();
    PNN_CUDA_CHECK(cudaGraphLaunch(executable_, cuda_stream(device_)));
    ++steps_;
  }

  // The same step enqueued kernel by kernel, without the graph (and without capturing): what each replay
  // does, for comparisons. Also no host synchronisation.
  void run_uncaptured() {
    const cuda_detail::DeviceGuard guard(device_);
    enqueue_step();
    ++steps_;
  }

  // The mean loss of the last step. Waits for it (a synchronisation point); throws ArgumentError if a
  // label was out of range, as the eager loss does.
  T loss() const {
    PNN_CHECK(steps_ > 0, ArgumentError, "CudaGraphStep::loss(): no step has run yet");
    const cuda_detail::DeviceGuard guard(device_);
    Tensor<T, 1, cpu> mean(Extents<1>{1});
    Tensor<int, 1, cpu> invalid(Extents<1>{1});
    copy(scratch_.mean.view(), mean.view());
    copy(scratch_.first_invalid_row.view(), invalid.view());
    if (invalid[0] != cuda_detail::no_invalid_row) {
      if constexpr (std::is_same_v<target_element, std::int32_t> && target_rank == 1) {
        Tensor<std::int32_t, 1, cpu> label(Extents<1>{1});
        copy(TensorView<const std::int32_t, 1, cuda>(targets_.data() + invalid[0], {1}), label.view());
        throw ArgumentError(detail::concat("softmax cross-entropy: label ", label[0], " of sample ", invalid[0],
                                           " is outside [0, ", output_features, ")"));
      } else {
        throw ArgumentError(detail::concat("the loss found an invalid target in sample ", invalid[0]));
      }
    }
    return mean[0];
  }
  // The last step's mean loss, in device memory (valid once the step has run on the stream).
  TensorView<const T, 1, cuda> loss_on_device() const { return scratch_.mean.view(); }

  index batch() const { return batch_; }
  // Steps run through this object (eager first step, replays and run_uncaptured()).
  index steps() const { return steps_; }
  // How often the step was captured: 1, plus one per change of hyper-parameters or TF32.
  index captures() const { return captures_; }
  bool captured() const { return executable_ != nullptr; }
  // Nodes of the captured graph (kernels, cuBLAS's kernels, memsets, copies, allocations and frees):
  // what one replay runs in one launch.
  std::size_t graph_nodes() const { return graph_nodes_; }

 private:
  static Extents<target_rank> target_extents(index batch) {
    if constexpr (target_rank == 1) return Extents<1>{batch};
    else return Extents<2>{batch, output_features};
  }

  template <class D>
  void stage(TensorView<const T, 2, D> inputs, TensorView<const target_element, target_rank, D> targets) {
    PNN_CHECK(inputs.shape() == inputs_.shape() && targets.shape() == targets_.shape(), ShapeError,
              "CudaGraphStep::run: this step was set up for inputs ", format_extents<2>(inputs_.shape()),
              " and targets ", format_extents<target_rank>(targets_.shape()), " but got ",
              format_extents<2>(inputs.shape()), " and ", format_extents<target_rank>(targets.shape()),
              "; a captured step has fixed shapes: use another CudaGraphStep (or pnn::train_step) for "
              "other batch sizes, e.g. an epoch's last, smaller batch");
    copy(inputs, inputs_.view());
    copy(targets, targets_.view());
  }

  // Everything one step does, on pnn's stream of device_, with no host synchronisation: capturable.
  void enqueue_step() {
    // No random generator: a layer that draws host random numbers fails loudly instead of being frozen.
    const Context context{.training = true, .random = nullptr};
    model_.zero_grad();
    auto& stack = model_.layers();
    stack.forward(TensorView<const T, 2, cuda>(inputs_.view()), trace_, context);
    CudaDeviceLoss<LossFunction>::enqueue(loss_, trace_.output(), target_view(targets_.view()),
                                          trace_.output_gradient.view(), scratch_);
    stack.backward(TensorView<const T, 2, cuda>(trace_.output_gradient.view()), TensorView<T, 2, cuda>{}, trace_,
                   context);
    optimizer_.step(model_.parameters());
  }

  void capture() {
    cudaStream_t stream = cuda_stream(device_);
    // cuBLAS creates its handle with cudaMalloc, which a capture forbids: make sure this thread has one.
    (void)cuda_detail::cublas_handle(device_);
    cuda_detail::CaptureLedger ledger;
    cudaGraph_t graph = nullptr;
    cudaError_t ended = cudaSuccess;
    {
      const cuda_detail::CaptureLedger::Scope open(ledger);
      PNN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
      try {
        enqueue_step();
      } catch (const std::exception& error) {
        cudaGraph_t partial = nullptr;
        (void)cudaStreamEndCapture(stream, &partial);
        if (partial) (void)cudaGraphDestroy(partial);
        (void)cudaGetLastError();  // the capture's failure must not be reported by the next, unrelated launch
        release_after_capture(ledger);
        throw CudaError(detail::concat(
            "CudaGraphStep: capturing the training step failed: ", error.what(),
            ". A captured step must not wait for the device or hand a value to the host (a device-to-host copy, a "
            "reduction returning a value, a synchronisation, cudaMalloc) nor allocate memory that outlives it"));
      }
      ended = cudaStreamEndCapture(stream, &graph);
    }
    release_after_capture(ledger);
    if (ended != cudaSuccess) {
      if (graph) (void)cudaGraphDestroy(graph);
      (void)cudaGetLastError();
      throw CudaError(
          detail::concat("CudaGraphStep: the capture of the training step was invalidated: ", cudaGetErrorString(ended),
                         " (", cudaGetErrorName(ended),
                         "). Something in the step synchronised with the host or used a stream the "
                         "capture does not know; another thread may have used pnn's stream of this device meanwhile"));
    }
    if (!ledger.live.empty() || !ledger.foreign.empty()) {
      // The graph is deliberately not destroyed (a leak, on this error path only) and never runs: the layer
      // that kept memory holds one of its addresses, which must not be handed out again while the layer
      // may still free it (deallocate() declines to).
      throw CudaError(detail::concat(
          "CudaGraphStep: the captured step allocates ", ledger.live.size(),
          " block(s) of device memory that outlive "
          "it and releases ",
          ledger.foreign.size(),
          " allocated before it: something in the step (a layer, the loss "
          "or the update rule) keeps a buffer it first allocates, grows or replaces inside the step. A replay would "
          "allocate such a buffer anew and lose its contents; size it in the eager first step instead. That part of "
          "the model now holds an address in a graph that never runs: make the model anew"));
    }
    std::size_t nodes = 0;
    cudaGraphExec_t executable = nullptr;
    const cudaError_t counted = cudaGraphGetNodes(graph, nullptr, &nodes);
    // pnn's own allocations are paired with their frees (checked above). Auto-free on launch is for those a
    // library makes inside the step and keeps for the graph (cuBLAS's workspace may be one): a relaunch
    // frees them first instead of failing.
    const cudaError_t instantiated =
        counted == cudaSuccess
            ? cudaGraphInstantiateWithFlags(&executable, graph, cudaGraphInstantiateFlagAutoFreeOnLaunch)
            : counted;
    (void)cudaGraphDestroy(graph);  // the executable graph does not need it
    PNN_CUDA_CHECK(instantiated);
    if (executable_) cuda_detail::report(cudaGraphExecDestroy(executable_), "cudaGraphExecDestroy");
    executable_ = executable;
    PNN_CUDA_CHECK(cudaGraphUpload(executable_, stream));  // so the first replay is not slower than the others
    graph_nodes_ = nodes;
    captured_rule_ = optimizer_.rule;
    captured_tf32_ = cuda_settings().allow_tf32;
    captured_resets_ = optimizer_.resets();
    ++captures_;
  }

  // Frees, once the capture has ended, what the step released of the memory allocated before it.
  static void release_after_capture(const cuda_detail::CaptureLedger& ledger) noexcept {
    for (void* memory : ledger.foreign) DeviceTraits<cuda>::deallocate(memory);
  }

  Model& model_;
  Optimizer<Rule, T, cuda>& optimizer_;
  LossFunction loss_;
  index batch_;
  int device_;
  Tensor<T, 2, cuda> inputs_;
  target_tensor targets_;
  CudaLossScratch<T> scratch_;
  typename Model::Trace trace_;
  cudaGraphExec_t executable_ = nullptr;
  std::size_t graph_nodes_ = 0;
  Rule captured_rule_{};
  bool captured_tf32_ = false;
  index captured_resets_ = 0;
  index steps_ = 0;
  index captures_ = 0;
};

}  // namespace pnn
