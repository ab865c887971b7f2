// pnn/core/random.hpp: the one seedable random generator behind every random choice pnn makes.
//
// Weight initialisation, shuffling and dropout all draw from Generators derived from one seed, so the
// same seed gives bit-identical training. The algorithm (xoshiro256**) and the distributions are written
// out here rather than taken from <random>, whose distributions differ between standard libraries.
//
// split(stream) derives an independent generator without advancing this one: a model gives each layer
// its own stream, so a pipeline stage that holds layers 4..7 initialises them exactly as the serial
// model does, without drawing the numbers of layers 0..3 first.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>
#include <span>
#include <utility>

#include "pnn/core/config.hpp"

namespace pnn {

// Well-known stream numbers, so each consumer of randomness draws from its own sequence.
namespace streams {
inline constexpr std::uint64_t initialisation = 1;
inline constexpr std::uint64_t shuffling = 2;
inline constexpr std::uint64_t dropout = 3;
}  // namespace streams

class Generator {
 public:
  explicit Generator(std::uint64_t seed = 0) : key_(mix(seed)) { reseed(); }

  std::uint64_t key() const { return key_; }

  // An independent generator for `stream`; this generator is left unchanged.
  Generator split(std::uint64_t stream) const {
    Generator child;
    child.key_ = mix(key_ ^ mix(stream + 0x9e3779b97f4a7c15ULL));
    child.reseed();
    return child;
  }

  std::uint64_t next() {
    const std::uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const std::uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

  // Uniform in [0, 1), with all the precision of T's mantissa.
  template <class T = float>
  T uniform() {
    if constexpr (sizeof(T) <= 4) return static_cast<T>(next() >> 40) * static_cast<T>(0x1.0p-24);
    else return static_cast<T>(next() >> 11) * static_cast<T>(0x1.0p-53);
  }
  template <class T = float>
  T uniform(T low, T high) {
    return low + (high - low) * uniform<T>();
  }

  // Normal distribution by the Box-Muller transform (both values of a pair are used).
  template <class T = float>
  T normal(T mean = T(0), T stddev = T(1)) {
    if (has_spare_) {
      has_spare_ = false;
      return mean + stddev * static_cast<T>(spare_);
    }
    double u1 = 0;
    while (u1 <= 0) u1 = uniform<double>();
    const double u2 = uniform<double>();
    const double radius = std::sqrt(-2.0 * std::log(u1));
    spare_ = radius * std::sin(2 * std::numbers::pi * u2);
    has_spare_ = true;
    return mean + stddev * static_cast<T>(radius * std::cos(2 * std::numbers::pi * u2));
  }

  // Uniform integer in [0, bound), without modulo bias (Lemire's method).
  std::uint64_t below(std::uint64_t bound) {
    if (bound == 0) return 0;
    __uint128_t product = static_cast<__uint128_t>(next()) * bound;
    auto low = static_cast<std::uint64_t>(product);
    if (low < bound) {
      const std::uint64_t threshold = (0 - bound) % bound;
      while (low < threshold) {
        product = static_cast<__uint128_t>(next()) * bound;
        low = static_cast<std::uint64_t>(product);
      }
    }
    return static_cast<std::uint64_t>(product >> 64);
  }

  // Fisher-Yates shuffle.
  template <class T>
  void shuffle(std::span<T> items) {
    for (std::size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[below(i)]);
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  // splitmix64's finaliser: decorrelates nearby seeds and stream numbers.
  static std::uint64_t mix(std::uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  void reseed() {
    std::uint64_t s = key_;
    for (auto& word : state_) word = s = mix(s);
    has_spare_ = false;
  }

  std::uint64_t key_ = 0;
  std::uint64_t state_[4] = {};
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace pnn
