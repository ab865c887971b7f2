// Trains the multi-layer perceptron 784-256-128-10 with ReLU on Fashion-MNIST.
#include "training_program.hpp"
#include "models.hpp"

// Pipeline stages: the first Dense+ReLU, the rest.
using MlpStages = pnn::Split<2>;

int main(int argc, char** argv) {
  return examples::run_training_program<examples::Mlp, MlpStages>(
      argc, argv, "MLP 784-256-128-10", {.epochs = 1, .batch = 64, .learning_rate = 0.001, .optimizer = "adam"});
}
