//! The shape of one sample as it flows through a network: channels, height
//! and width (NCHW without the N).  A flat vector of n features is (n, 1, 1),
//! so the 2-D points of a mixture are (2, 1, 1) and an MLP sees only flat
//! shapes.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    pub const fn new(c: usize, h: usize, w: usize) -> Shape {
        Shape { c, h, w }
    }

    /// n features: (n, 1, 1).
    pub const fn flat(n: usize) -> Shape {
        Shape { c: n, h: 1, w: 1 }
    }

    /// Values per sample.
    pub const fn len(&self) -> usize {
        self.c * self.h * self.w
    }

    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this is a plain feature vector (h = w = 1).
    pub const fn is_flat(&self) -> bool {
        self.h == 1 && self.w == 1
    }
}

impl fmt::Display for Shape {
    /// `128×7×7`, or `6272` for a flat shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_flat() {
            write!(f, "{}", self.c)
        } else {
            write!(f, "{}×{}×{}", self.c, self.h, self.w)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Shape;

    #[test]
    fn shapes_print_and_count() {
        assert_eq!(Shape::new(128, 7, 7).to_string(), "128×7×7");
        assert_eq!(Shape::flat(6272).to_string(), "6272");
        assert_eq!(Shape::new(1, 28, 28).len(), 784);
        assert!(Shape::flat(2).is_flat() && !Shape::new(1, 2, 2).is_flat());
    }
}
