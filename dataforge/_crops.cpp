// dataforge._crops: a batch of decoded crops resized, flipped and written into one
// uint8 batch, in one call that holds no GIL.
//
// NOTE [one native call per batch]: under the thread engine every call from Python into
// torch or libjpeg releases the GIL and takes it back, and each take-back can wait while
// another fetch thread runs Python; every wait leaves a core idle (NOTE [GIL
// transitions] in transforms/presets.py). So a batch of files goes through the presets'
// `call_batch` (ImageFolder's `__getitems__` calls it): each file's header is read and
// its crop drawn in Python (the seeds of the whole batch in one torch op), then every
// crop is decoded in one GIL release (`_jpeg.decode_crops`) and resized, flipped (or
// center-cropped, for the eval preset) and written into the batch in another (here).
// Same draws and same pixels as the single calls (tested): this makes the same ATen call
// per crop as `resize_crop` in transforms/resize.py (`_upsample_bilinear2d_aa`, or
// `upsample_bilinear2d` without antialias, on the same `(1, C, h, w)` layout). Measured on the 2-core VM (benchmarks/README.md):
// `benchmarks/arm_threads.py --arm natural`: GIL waits per sample per fetch thread 0.30 ->
// 0.03, cores busy 1.94 -> 1.98, CPU per sample 1.04 -> 0.92 ms.
// Built against the torch it is installed with (setup.py, only where torch is importable
// at build time); when it is missing or does not load, the presets resize crop by crop,
// with the same pixels.

#include <torch/extension.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#ifndef DATAFORGE_TORCH_VERSION
#define DATAFORGE_TORCH_VERSION "unknown"
#endif

namespace {

void check(bool ok, const std::string& message) {
    if (!ok) throw pybind11::value_error(message);
}

// Where crop i goes: resized to (height, width), then its (out's H x W) window at (top,
// left) is written: the whole of it for a random resized crop, the centre for
// resize + center crop.
struct Window {
    int64_t height, width, top, left;
};

using Windows = std::optional<std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>>>;

std::vector<Window> check_args(const std::vector<at::Tensor>& crops, const std::vector<bool>& flips,
                               const at::Tensor& out, const Windows& windows) {
    check(out.dim() == 4 && out.scalar_type() == at::kByte && out.device().is_cpu(),
          "resize_into: out must be a uint8 CPU tensor (N, C, H, W)");
    const size_t n = crops.size();
    check(static_cast<int64_t>(n) == out.size(0) && n == flips.size() &&
              (!windows || windows->size() == n),
          "resize_into: crops, flips, out (and windows) must have the same length, got " +
              std::to_string(n) + ", " + std::to_string(flips.size()) + " and " +
              std::to_string(out.size(0)) +
              (windows ? " (" + std::to_string(windows->size()) + ")" : ""));
    const int64_t height = out.size(2), width = out.size(3);
    std::vector<Window> placed;
    for (size_t i = 0; i < n; ++i) {
        const at::Tensor& c = crops[i];
        check(c.dim() == 4 && c.size(0) == 1 && c.size(1) == out.size(1) && c.size(2) > 0 &&
                  c.size(3) > 0 && c.scalar_type() == at::kByte && c.device().is_cpu(),
              "resize_into: crop " + std::to_string(i) + " must be a uint8 CPU tensor (1, " +
                  std::to_string(out.size(1)) + ", h, w) with h, w > 0");
        Window w{height, width, 0, 0};
        if (windows) std::tie(w.height, w.width, w.top, w.left) = (*windows)[i];
        check(w.top >= 0 && w.left >= 0 && w.top + height <= w.height && w.left + width <= w.width,
              "resize_into: window " + std::to_string(i) + " must hold out's " +
                  std::to_string(height) + " x " + std::to_string(width) +
                  " pixels at (top, left) inside its (height, width)");
        placed.push_back(w);
    }
    return placed;
}

// The per-sample path's layout rule (`resize_crop`): a crop not in the region decoder's
// dense channels-last layout is given the layout v2's resize_image gives it.
at::Tensor as_resize_input(const at::Tensor& crop) {
    const int64_t c = crop.size(1), h = crop.size(2), w = crop.size(3);
    const bool dense = crop.stride(0) == c * h * w && crop.stride(1) == 1 &&
                       crop.stride(2) == w * c && crop.stride(3) == c;
    return dense ? crop : crop[0].reshape({1, c, h, w});
}

void resize_into(const std::vector<at::Tensor>& crops, const std::vector<bool>& flips,
                 at::Tensor out, bool antialias, const Windows& windows) {
    const std::vector<Window> placed = check_args(crops, flips, out, windows);
    pybind11::gil_scoped_release no_gil;
    for (size_t i = 0; i < crops.size(); ++i) {
        const Window& w = placed[i];
        at::Tensor image;
        if (crops[i].size(2) == w.height && crops[i].size(3) == w.width) {
            image = crops[i][0];
        } else {
            const at::Tensor x = as_resize_input(crops[i]);
            image = (antialias ? at::_upsample_bilinear2d_aa(x, {w.height, w.width}, false,
                                                             std::nullopt, std::nullopt)
                               : at::upsample_bilinear2d(x, {w.height, w.width}, false,
                                                         std::nullopt, std::nullopt))[0];
        }
        image = image.narrow(1, w.top, out.size(2)).narrow(2, w.left, out.size(3));
        out[static_cast<int64_t>(i)].copy_(flips[i] ? image.flip({-1}) : image);
    }
}

}  // namespace

PYBIND11_MODULE(_crops, m) {
    m.doc() = "A batch of decoded crops resized, flipped and written into one uint8 batch "
              "(NOTE [one native call per batch] in dataforge/_crops.cpp).";
    m.attr("torch_version") = DATAFORGE_TORCH_VERSION;  // the torch it was built against
    m.def("resize_into", &resize_into, pybind11::arg("crops"), pybind11::arg("flips"),
          pybind11::arg("out"), pybind11::arg("antialias"), pybind11::arg("windows") = pybind11::none(),
          "Resize each (1, C, h, w) uint8 crop as torch's bilinear resize does (antialiased "
          "when asked) to out's (H, W), or with windows to windows[i] = (height, width, top, "
          "left) and keep its H x W pixels at (top, left); flip those whose flag is set, and "
          "write crop i into out[i]; one GIL release for the whole batch.");
}
