// pnn/pnn.hpp: everything a CPU user needs, in one include.
//
//   core/    what every device shares: tensors, shapes, expressions, the device seams and the Backend
//            concept (core/backend.hpp), window geometry, parameters, random numbers
//   cpu/     the CPU backend: host memory, the Eigen executor, pnn's SGEMM, the window kernels
//   layers/  one header per layer, the Layer concept (layers/layer.hpp), and LayerStack
//   model/   Input<...> and Sequential<...>
//   loss/    softmax cross-entropy, mean squared error
//   optim/   Optimizer<Rule> with SGD, Adam, LARS; learning-rate schedules, clipping, gradient accumulation
//   data/    IDX (MNIST-format) and CIFAR-10 files, datasets, batching
//   io/      safetensors, a model's weights saved and loaded (pnn::save, pnn::load)
//   train/   one training step (pnn::train_step), the training loop (fit, evaluate) and its metrics
//   dist/    communicators and parallel strategies (include pnn/dist.hpp)
//   cuda/    the CUDA backend (only from .cu files)
#pragma once

#include "pnn/core/backend.hpp"
#include "pnn/core/device.hpp"
#include "pnn/core/executor.hpp"
#include "pnn/core/expression.hpp"
#include "pnn/core/linalg.hpp"
#include "pnn/core/parameter.hpp"
#include "pnn/core/random.hpp"
#include "pnn/core/shape.hpp"
#include "pnn/core/tensor.hpp"
#include "pnn/core/timeline.hpp"
#include "pnn/cpu/cpu.hpp"
#include "pnn/data/batcher.hpp"
#include "pnn/data/cifar.hpp"
#include "pnn/data/dataset.hpp"
#include "pnn/data/idx.hpp"
#include "pnn/io/atomic_file.hpp"
#include "pnn/io/checkpoint.hpp"
#include "pnn/io/safetensors.hpp"
#include "pnn/io/weights.hpp"
#include "pnn/layers/avg_pool2d.hpp"
#include "pnn/layers/batch_norm.hpp"
#include "pnn/layers/conv2d.hpp"
#include "pnn/layers/dense.hpp"
#include "pnn/layers/dropout.hpp"
#include "pnn/layers/flatten.hpp"
#include "pnn/layers/layer.hpp"
#include "pnn/layers/layer_stack.hpp"
#include "pnn/layers/max_pool2d.hpp"
#include "pnn/layers/relu.hpp"
#include "pnn/layers/residual.hpp"
#include "pnn/layers/sigmoid.hpp"
#include "pnn/layers/tanh.hpp"
#include "pnn/loss/mean_squared_error.hpp"
#include "pnn/loss/softmax_cross_entropy.hpp"
#include "pnn/model/input.hpp"
#include "pnn/model/sequential.hpp"
#include "pnn/optim/adam.hpp"
#include "pnn/optim/lars.hpp"
#include "pnn/optim/optimizer.hpp"
#include "pnn/optim/schedule.hpp"
#include "pnn/optim/sgd.hpp"
#include "pnn/train/early_stopping.hpp"
#include "pnn/train/fit.hpp"
#include "pnn/train/metrics.hpp"
#include "pnn/train/train_step.hpp"
