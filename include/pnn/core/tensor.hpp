// pnn/core/tensor.hpp: Tensor (owns aligned device memory) and TensorView (refers to memory it does not own).
//
// Both are row-major, have their rank and element type as template parameters and their device as a tag
// (pnn::cpu, pnn::cuda), and both are expressions, so `y = relu(x + b)` works on either.
//
// Assigning an expression to a view writes elements, as with Eigen's Map. Copy-constructing a view
// aliases the same memory; rebind() points an existing view elsewhere; assigning one view to another of
// the same type is deleted, since a reader could not tell which of the two is meant. Tensor copies are
// deep, moves are cheap.
#pragma once

#include <algorithm>
#include <array>
#include <cassert>
#include <initializer_list>
#include <memory>
#include <type_traits>
#include <utility>

#include "pnn/core/device.hpp"
#include "pnn/core/executor.hpp"
#include "pnn/core/expression.hpp"
#include "pnn/core/shape.hpp"

namespace pnn {

template <class T, std::size_t Rank, class D = cpu>
class TensorView : public Expression<TensorView<T, Rank, D>> {
 public:
  using value_type = std::remove_const_t<T>;
  using element_type = T;
  using device = D;
  static constexpr std::size_t rank = Rank;

  TensorView() = default;
  PNN_HOST_DEVICE TensorView(T* data, const Extents<Rank>& shape) : data_(data), shape_(shape) {}
  TensorView(const TensorView&) = default;
  // A view of non-const elements converts to a view of const elements.
  template <class U>
    requires(std::is_const_v<T> && std::is_same_v<const U, T>)
  TensorView(const TensorView<U, Rank, D>& other) : data_(other.data()), shape_(other.shape()) {}

  // Writes the expression's values into the viewed memory (the shapes must be equal).
  template <AnyExpression E>
  const TensorView& operator=(const E& expression) const {
    static_assert(!std::is_const_v<T>, "cannot assign to a view of const elements");
    Executor<D>::assign(*this, expression.self());
    return *this;
  }
  // Deleted because it would be ambiguous between "refer to other memory" and "copy the elements":
  // use rebind(other) for the first and copy(source, destination) for the second.
  const TensorView& operator=(const TensorView&) const = delete;  // const, like the others: no ambiguity
  template <AnyExpression E>
  const TensorView& operator+=(const E& e) const {
    return *this = *this + e.self();
  }
  template <AnyExpression E>
  const TensorView& operator-=(const E& e) const {
    return *this = *this - e.self();
  }
  const TensorView& operator*=(value_type s) const { return *this = *this * s; }

  // Points this view at other memory. (Assignment writes elements; this does not.)
  void rebind(const TensorView& other) {
    data_ = other.data_;
    shape_ = other.shape_;
  }

  PNN_HOST_DEVICE T* data() const { return data_; }
  PNN_HOST_DEVICE const Extents<Rank>& shape() const { return shape_; }
  PNN_HOST_DEVICE index dim(std::size_t i) const { return shape_[i]; }
  PNN_HOST_DEVICE index size() const { return element_count<Rank>(shape_); }
  PNN_HOST_DEVICE bool empty() const { return data_ == nullptr || size() == 0; }
  // A view that refers to nothing: used where an output is not wanted (e.g. the first layer's input gradient).
  explicit operator bool() const { return data_ != nullptr; }
  const TensorView& view() const { return *this; }

  // Element access on the host: only for the CPU device (tests and scalar code). A device's elements are
  // read by copying them to a host tensor.
  template <std::integral... I>
    requires(sizeof...(I) == Rank && std::is_same_v<D, cpu>)
  T& operator()(I... indices) const {
    const std::array<index, Rank> at{static_cast<index>(indices)...};
    index offset = 0;
    for (std::size_t d = 0; d < Rank; ++d) {
      assert(at[d] >= 0 && at[d] < shape_[d]);
      offset = offset * shape_[d] + at[d];
    }
    return data_[offset];
  }
  T& operator[](index i) const
    requires std::is_same_v<D, cpu>
  {
    assert(i >= 0 && i < size());
    return data_[i];
  }

  // The same elements with another shape of the same size.
  template <std::size_t R2>
  TensorView<T, R2, D> reshape(const Extents<R2>& shape) const {
    PNN_CHECK(element_count<R2>(shape) == size(), ShapeError, "cannot reshape a tensor of shape ",
              format_extents<Rank>(shape_), " to ", format_extents<R2>(shape), ": the sizes differ");
    return TensorView<T, R2, D>(data_, shape);
  }
  TensorView<T, 1, D> flat() const { return TensorView<T, 1, D>(data_, {size()}); }

  // Rows [begin, begin + count) of the outermost dimension, e.g. a micro-batch of a batch.
  TensorView rows(index begin, index count) const {
    PNN_CHECK(begin >= 0 && count >= 0 && begin + count <= shape_[0], ShapeError, "rows [", begin, ", ", begin + count,
              ") are outside a tensor of shape ", format_extents<Rank>(shape_));
    Extents<Rank> shape = shape_;
    shape[0] = count;
    return TensorView(data_ + begin * (size() / std::max<index>(shape_[0], 1)), shape);
  }

  // Expression interface: a view is a leaf held by value.
  PNN_HOST_DEVICE index broadcast_period(index full) const { return size() < full ? size() : full; }
  PNN_HOST_DEVICE value_type coeff(index i) const { return data_[i % size()]; }

 private:
  T* data_ = nullptr;
  Extents<Rank> shape_{};
};

// Owns `capacity` elements of device memory, aligned, released on destruction.
template <class T, class D>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(index capacity)
      : data_(static_cast<T*>(DeviceTraits<D>::allocate(sizeof(T) * static_cast<std::size_t>(capacity)))),
        capacity_(capacity) {}
  Buffer(Buffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), capacity_(std::exchange(other.capacity_, 0)) {}
  Buffer& operator=(Buffer&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(capacity_, other.capacity_);
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() {
    if (data_) DeviceTraits<D>::deallocate(data_);
  }
  T* data() const { return data_; }
  index capacity() const { return capacity_; }

 private:
  T* data_ = nullptr;
  index capacity_ = 0;
};

template <class T, std::size_t Rank, class D = cpu>
class Tensor : public Expression<Tensor<T, Rank, D>> {
  static_assert(!std::is_const_v<T>, "a Tensor owns its elements; use TensorView<const T, ...> for read-only access");
  static_assert(std::is_trivially_copyable_v<T>, "tensor elements must be trivially copyable");

 public:
  using value_type = T;
  using element_type = T;
  using device = D;
  static constexpr std::size_t rank = Rank;

  Tensor() = default;
  // Allocates and zero-fills.
  explicit Tensor(const Extents<Rank>& shape) { resize(shape); }
  template <std::integral... I>
    requires(sizeof...(I) == Rank)
  explicit Tensor(I... dims) : Tensor(Extents<Rank>{static_cast<index>(dims)...}) {}
  // A tensor with the given shape and values, row-major (host only).
  Tensor(const Extents<Rank>& shape, std::initializer_list<T> values) : Tensor(shape) {
    static_assert(std::is_same_v<D, cpu>, "initialise device tensors by copying from a host tensor");
    PNN_CHECK(static_cast<index>(values.size()) == size(), ShapeError, "a tensor of shape ",
              format_extents<Rank>(shape), " needs ", size(), " values, got ", values.size());
    std::copy(values.begin(), values.end(), data());
  }
  template <AnyExpression E>
  Tensor(const E& expression) : Tensor(expression.self().shape()) {  // NOLINT: implicit like Eigen
    Executor<D>::assign(view(), expression.self());
  }
  Tensor(const Tensor& other) : Tensor(other.shape_) {
    DeviceTraits<D>::copy(data(), other.data(), sizeof(T) * static_cast<std::size_t>(size()));
  }
  Tensor(Tensor&& other) noexcept : buffer_(std::move(other.buffer_)), shape_(std::exchange(other.shape_, {})) {}
  Tensor& operator=(Tensor&& other) noexcept {
    buffer_ = std::move(other.buffer_);
    shape_ = std::exchange(other.shape_, {});
    return *this;
  }
  Tensor& operator=(const Tensor& other) {
    if (this != &other) *this = other.view();
    return *this;
  }
  // Evaluates the expression into this tensor, taking the expression's shape.
  template <AnyExpression E>
  Tensor& operator=(const E& expression) {
    const auto& e = expression.self();
    if (e.shape() == shape_) {
      Executor<D>::assign(view(), e);
    } else {
      Tensor result(e.shape());  // the expression may read this tensor: evaluate before replacing it
      Executor<D>::assign(result.view(), e);
      *this = std::move(result);
    }
    return *this;
  }
  template <AnyExpression E>
  Tensor& operator+=(const E& e) {
    view() += e.self();
    return *this;
  }
  template <AnyExpression E>
  Tensor& operator-=(const E& e) {
    view() -= e.self();
    return *this;
  }
  Tensor& operator*=(T s) {
    view() *= s;
    return *this;
  }

  // Changes the shape. Reallocates only when the capacity is too small; the contents are then unspecified.
  void resize(const Extents<Rank>& shape) {
    for (index d : shape)
      PNN_CHECK(d >= 0, ShapeError, "negative dimension in tensor shape ", format_extents<Rank>(shape));
    const index needed = element_count<Rank>(shape);
    if (needed > buffer_.capacity()) {
      buffer_ = Buffer<T, D>(needed);
      DeviceTraits<D>::fill_zero(buffer_.data(), sizeof(T) * static_cast<std::size_t>(needed));
    }
    shape_ = shape;
  }
  void fill_zero() { DeviceTraits<D>::fill_zero(data(), sizeof(T) * static_cast<std::size_t>(size())); }

  T* data() { return buffer_.data(); }
  const T* data() const { return buffer_.data(); }
  const Extents<Rank>& shape() const { return shape_; }
  index dim(std::size_t i) const { return shape_[i]; }
  index size() const { return element_count<Rank>(shape_); }
  index capacity() const { return buffer_.capacity(); }
  bool empty() const { return size() == 0; }

  TensorView<T, Rank, D> view() { return {data(), shape_}; }
  TensorView<const T, Rank, D> view() const { return {data(), shape_}; }
  operator TensorView<T, Rank, D>() { return view(); }              // NOLINT: a tensor is usable as a view
  operator TensorView<const T, Rank, D>() const { return view(); }  // NOLINT

  template <std::integral... I>
    requires(sizeof...(I) == Rank && std::is_same_v<D, cpu>)
  T& operator()(I... indices) {
    return view()(indices...);
  }
  template <std::integral... I>
    requires(sizeof...(I) == Rank && std::is_same_v<D, cpu>)
  const T& operator()(I... indices) const {
    return view()(indices...);
  }
  T& operator[](index i)
    requires std::is_same_v<D, cpu>
  {
    return view()[i];
  }
  const T& operator[](index i) const
    requires std::is_same_v<D, cpu>
  {
    return view()[i];
  }

  template <std::size_t R2>
  TensorView<T, R2, D> reshape(const Extents<R2>& shape) {
    return view().reshape(shape);
  }
  template <std::size_t R2>
  TensorView<const T, R2, D> reshape(const Extents<R2>& shape) const {
    return view().reshape(shape);
  }
  TensorView<T, 1, D> flat() { return view().flat(); }
  TensorView<const T, 1, D> flat() const { return view().flat(); }

  // Expression interface (only reached when an rvalue tensor was moved into an expression node).
  index broadcast_period(index full) const { return size() < full ? size() : full; }
  T coeff(index i) const { return data()[i % size()]; }

 private:
  Buffer<T, D> buffer_;
  Extents<Rank> shape_{};
};

// Copies elements between views of equal size on the same device. Copies between devices are overloads
// of the same function, defined by the device's headers (host <-> cuda in include/pnn/cuda/).
template <class T, std::size_t R, class D>
void copy(TensorView<const T, R, D> source, TensorView<T, R, D> destination) {
  PNN_CHECK(source.size() == destination.size(), ShapeError,
            "copy between tensors of different sizes: ", format_extents<R>(source.shape()), " and ",
            format_extents<R>(destination.shape()));
  DeviceTraits<D>::copy(destination.data(), source.data(), sizeof(T) * static_cast<std::size_t>(source.size()));
}

}  // namespace pnn
