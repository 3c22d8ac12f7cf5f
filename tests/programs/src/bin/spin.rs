//! `spin`: loops forever doing arithmetic the optimiser cannot remove; it never returns or prints.
//!
//! The fixture for fuel/time limits: the worker must stop it from outside.

use std::hint::black_box;

fn main() {
    let mut state: u64 = black_box(0x9E37_79B9_7F4A_7C15);
    loop {
        // `black_box` makes the compiler assume the value is observed, so the loop cannot be proven
        // side-effect free and deleted (an infinite loop without side effects would be undefined behaviour).
        state = black_box(state.rotate_left(7).wrapping_mul(0xBF58_476D_1CE4_E5B9).wrapping_add(1));
    }
}
