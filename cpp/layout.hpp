// What a network is made of: its cell, its sizes, the names and shapes of its
// parameter arrays, and the order in which the engine keeps gate columns.
//
// A network has L recurrent layers of one cell type and a softmax output:
//   layer 0 reads the one-hot character (Wx x_t is column x_t of Wx),
//   layer l > 0 reads h_t of layer l - 1,
//   o_t = V h_t^{top} + c,   loss = sum_t -log softmax(o_t)[y_t].
// Parameters of layer l (G gate blocks of m rows; in_0 = K, in_l = m):
//   l{l}.Wx (G*m, in_l)   l{l}.Wh (G*m, m)   l{l}.b (G*m)   gru only: l{l}.bh (G*m)
// then V (K, m) and c (K). Gate blocks are stacked as rnn [a], lstm [i, f, g, o],
// gru [r, z, n] (PyTorch's orders). The classic vanilla RNN is the one-layer
// rnn; its arrays are also known by the names of the classic equations:
//   U = l0.Wx,  W = l0.Wh,  b = l0.b  (and V, c).
// The recurrent state of one stream is L rows of S*m values (S = 2 for lstm:
// h then c; 1 otherwise).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace charrnn {

enum class Cell { rnn, lstm, gru };
enum class Optimizer { adagrad, rmsprop, adam };
enum class ClipMode { elementwise, global_norm, none };

// The names of an enumeration's values, in the order of the enumeration.
template <typename E>
struct Names;
template <>
struct Names<Cell> {
    static constexpr const char* what = "cell";
    static constexpr const char* list[] = {"rnn", "lstm", "gru"};
};
template <>
struct Names<Optimizer> {
    static constexpr const char* what = "optimizer";
    static constexpr const char* list[] = {"adagrad", "rmsprop", "adam"};
};
template <>
struct Names<ClipMode> {
    static constexpr const char* what = "clip_mode";
    static constexpr const char* list[] = {"elementwise", "global_norm", "none"};
};

template <typename E>
const char* name_of(E e) {
    return Names<E>::list[static_cast<int>(e)];
}

// Gate blocks per layer and state vectors per layer.
inline std::size_t gate_count(Cell c) { return c == Cell::lstm ? 4 : c == Cell::gru ? 3 : 1; }
inline std::size_t state_count(Cell c) { return c == Cell::lstm ? 2 : 1; }

struct ArraySpec {
    std::string name;   // l0.Wx, ..., V, c
    std::string alias;  // the classic name (U, W, b, V, c) for a one-layer rnn; else empty
    std::size_t rows, cols;  // cols == 0: a vector of `rows`
    std::size_t size() const { return cols ? rows * cols : rows; }
};

struct NetLayout {
    Cell cell = Cell::rnn;
    std::size_t K = 0, m = 0, L = 0;

    std::size_t G() const { return gate_count(cell); }
    std::size_t S() const { return state_count(cell); }
    std::size_t Gm() const { return G() * m; }
    std::size_t per_layer() const { return cell == Cell::gru ? 4 : 3; }
    // Values of one stream's recurrent state.
    std::size_t state_size() const { return L * S() * m; }
    bool classic() const { return cell == Cell::rnn && L == 1; }

    std::vector<ArraySpec> arrays() const {
        std::vector<ArraySpec> out;
        const bool named = classic();
        for (std::size_t l = 0; l < L; ++l) {
            const std::string p = "l" + std::to_string(l) + ".";
            out.push_back({p + "Wx", named ? "U" : "", Gm(), l == 0 ? K : m});
            out.push_back({p + "Wh", named ? "W" : "", Gm(), m});
            out.push_back({p + "b", named ? "b" : "", Gm(), 0});
            if (cell == Cell::gru) out.push_back({p + "bh", "", Gm(), 0});
        }
        out.push_back({"V", named ? "V" : "", K, m});
        out.push_back({"c", named ? "c" : "", K, 0});
        return out;
    }
};

// The order of the G*m gate columns in the engine's forward buffers. Units are
// taken in blocks of u (u divides the panel width NR of the matrix kernels,
// and G*u is a multiple of NR); a block holds the G gate columns of its units
// side by side:  [gate 0 of units k..k+u) [gate 1 ...] ... [gate G-1 ...].
// A panel of NR columns therefore holds whole units, so a thread that owns a
// range of NR-aligned units owns all their gates and can apply the cell
// without waiting for the other threads. The last block may be shorter.
struct GateOrder {
    std::size_t G = 1, m = 0, u = 1;

    GateOrder() = default;
    GateOrder(std::size_t G_, std::size_t m_, std::size_t NR) : G(G_), m(m_) {
        std::size_t a = NR, b = G_;
        while (b) {
            const std::size_t t = a % b;
            a = b;
            b = t;
        }
        u = NR / a;  // NR / gcd(NR, G)
    }
    // Units in the block that starts at unit k0 (a multiple of u).
    std::size_t block_units(std::size_t k0) const { return std::min(u, m - k0); }
    // Column of gate g of unit k.
    std::size_t col(std::size_t g, std::size_t k) const {
        const std::size_t k0 = k - k % u;
        return k0 * G + g * block_units(k0) + (k - k0);
    }
    // map[column] = natural row g*m + k of that column (for packing weights).
    std::vector<std::uint32_t> rows_of_columns() const {
        std::vector<std::uint32_t> map(G * m);
        for (std::size_t g = 0; g < G; ++g)
            for (std::size_t k = 0; k < m; ++k) map[col(g, k)] = static_cast<std::uint32_t>(g * m + k);
        return map;
    }
};

}  // namespace charrnn
