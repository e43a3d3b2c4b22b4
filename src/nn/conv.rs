//! PLACEHOLDER (direct loops) until the im2col version lands: same API.

use super::float::Float;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub ci: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub k: usize,
    pub s: usize,
    pub p: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    pub fn new(ci: usize, h: usize, w: usize, co: usize, k: usize, s: usize, p: usize) -> Result<ConvGeom, String> {
        if k == 0 || s == 0 {
            return Err("kernel and stride must be >= 1".into());
        }
        if h + 2 * p < k || w + 2 * p < k {
            return Err(format!("kernel {k} does not fit a {h}×{w} input with padding {p} (output would be empty)"));
        }
        Ok(ConvGeom { ci, h, w, co, k, s, p, oh: (h + 2 * p - k) / s + 1, ow: (w + 2 * p - k) / s + 1 })
    }
    pub fn in_len(&self) -> usize {
        self.ci * self.h * self.w
    }
    pub fn out_len(&self) -> usize {
        self.co * self.oh * self.ow
    }
    pub fn weight_len(&self) -> usize {
        self.co * self.ci * self.k * self.k
    }
    pub fn scratch_len(&self, _rows: usize) -> usize {
        0
    }
    fn each(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        // f(in index, out index, weight index) per channel pair
        for o in 0..self.co {
            for c in 0..self.ci {
                for oy in 0..self.oh {
                    for ox in 0..self.ow {
                        for ky in 0..self.k {
                            for kx in 0..self.k {
                                let iy = (oy * self.s + ky) as isize - self.p as isize;
                                let ix = (ox * self.s + kx) as isize - self.p as isize;
                                if iy < 0 || ix < 0 || iy >= self.h as isize || ix >= self.w as isize {
                                    continue;
                                }
                                f(
                                    (c * self.h + iy as usize) * self.w + ix as usize,
                                    (o * self.oh + oy) * self.ow + ox,
                                    ((o * self.ci + c) * self.k + ky) * self.k + kx,
                                    0,
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    pub fn forward<T: Float>(&self, rows: usize, x: &[T], w: &[T], y: &mut [T], acc: bool, _s: &mut [T]) {
        let (il, ol) = (self.in_len(), self.out_len());
        if !acc {
            y[..rows * ol].fill(T::ZERO);
        }
        for r in 0..rows {
            self.each(|i, o, k, _| y[r * ol + o] += w[k] * x[r * il + i]);
        }
    }
    pub fn backward_data<T: Float>(&self, rows: usize, dy: &[T], w: &[T], dx: &mut [T], acc: bool, _s: &mut [T]) {
        let (il, ol) = (self.in_len(), self.out_len());
        if !acc {
            dx[..rows * il].fill(T::ZERO);
        }
        for r in 0..rows {
            self.each(|i, o, k, _| dx[r * il + i] += w[k] * dy[r * ol + o]);
        }
    }
    pub fn backward_filter<T: Float>(&self, rows: usize, x: &[T], dy: &[T], dw: &mut [T], acc: bool, _s: &mut [T]) {
        let (il, ol) = (self.in_len(), self.out_len());
        if !acc {
            dw[..self.weight_len()].fill(T::ZERO);
        }
        for r in 0..rows {
            self.each(|i, o, k, _| dw[k] += x[r * il + i] * dy[r * ol + o]);
        }
    }
}

pub fn convt_geom(
    in_c: usize,
    h: usize,
    w: usize,
    out_c: usize,
    k: usize,
    s: usize,
    p: usize,
) -> Result<ConvGeom, String> {
    let oh = (h as isize - 1) * s as isize - 2 * p as isize + k as isize;
    let ow = (w as isize - 1) * s as isize - 2 * p as isize + k as isize;
    if oh <= 0 || ow <= 0 {
        return Err("output would be empty".into());
    }
    let g = ConvGeom::new(out_c, oh as usize, ow as usize, in_c, k, s, p)?;
    if g.oh != h || g.ow != w {
        return Err("does not map back".into());
    }
    Ok(g)
}

fn bias<T: Float>(rows: usize, c: usize, hw: usize, b: &[T], y: &mut [T]) {
    for r in 0..rows {
        for ch in 0..c {
            for v in &mut y[(r * c + ch) * hw..(r * c + ch + 1) * hw] {
                *v += b[ch];
            }
        }
    }
}
fn bias_back<T: Float>(rows: usize, c: usize, hw: usize, dy: &[T], db: &mut [T]) {
    db[..c].fill(T::ZERO);
    for r in 0..rows {
        for ch in 0..c {
            for v in &dy[(r * c + ch) * hw..(r * c + ch + 1) * hw] {
                db[ch] += *v;
            }
        }
    }
}

pub struct Conv<'a, T> {
    pub w: &'a [T],
    pub b: &'a [T],
    pub g: ConvGeom,
}
pub struct ConvT<'a, T> {
    pub w: &'a [T],
    pub b: &'a [T],
    pub g: ConvGeom,
}

impl<T: Float> Conv<'_, T> {
    pub fn forward(&self, rows: usize, x: &[T], y: &mut [T], s: &mut [T]) {
        self.g.forward(rows, x, self.w, y, false, s);
        bias(rows, self.g.co, self.g.oh * self.g.ow, self.b, y);
    }
    pub fn backward(
        &self,
        rows: usize,
        x: &[T],
        dy: &[T],
        grads: Option<(&mut [T], &mut [T])>,
        dx: Option<&mut [T]>,
        s: &mut [T],
    ) {
        if let Some((dw, db)) = grads {
            self.g.backward_filter(rows, x, dy, dw, false, s);
            bias_back(rows, self.g.co, self.g.oh * self.g.ow, dy, db);
        }
        if let Some(dx) = dx {
            self.g.backward_data(rows, dy, self.w, dx, false, s);
        }
    }
    pub fn jvp(&self, dir: &Conv<T>, rows: usize, x: &[T], xdot: Option<&[T]>, ydot: &mut [T], s: &mut [T]) {
        self.g.forward(rows, x, dir.w, ydot, false, s);
        if let Some(xd) = xdot {
            self.g.forward(rows, xd, self.w, ydot, true, s);
        }
        bias(rows, self.g.co, self.g.oh * self.g.ow, dir.b, ydot);
    }
    #[allow(clippy::too_many_arguments)]
    pub fn jvp_backward(
        &self,
        dir: &Conv<T>,
        rows: usize,
        ybar: &[T],
        ydotbar: &[T],
        xbar: &mut [T],
        xdotbar: Option<&mut [T]>,
        s: &mut [T],
    ) {
        self.g.backward_data(rows, ybar, self.w, xbar, false, s);
        self.g.backward_data(rows, ydotbar, dir.w, xbar, true, s);
        if let Some(xdb) = xdotbar {
            self.g.backward_data(rows, ydotbar, self.w, xdb, false, s);
        }
    }
}

impl<T: Float> ConvT<'_, T> {
    pub fn forward(&self, rows: usize, x: &[T], y: &mut [T], s: &mut [T]) {
        self.g.backward_data(rows, x, self.w, y, false, s);
        bias(rows, self.g.ci, self.g.h * self.g.w, self.b, y);
    }
    pub fn backward(
        &self,
        rows: usize,
        x: &[T],
        dy: &[T],
        grads: Option<(&mut [T], &mut [T])>,
        dx: Option<&mut [T]>,
        s: &mut [T],
    ) {
        if let Some((dw, db)) = grads {
            self.g.backward_filter(rows, dy, x, dw, false, s);
            bias_back(rows, self.g.ci, self.g.h * self.g.w, dy, db);
        }
        if let Some(dx) = dx {
            self.g.forward(rows, dy, self.w, dx, false, s);
        }
    }
    pub fn jvp(&self, dir: &ConvT<T>, rows: usize, x: &[T], xdot: Option<&[T]>, ydot: &mut [T], s: &mut [T]) {
        self.g.backward_data(rows, x, dir.w, ydot, false, s);
        if let Some(xd) = xdot {
            self.g.backward_data(rows, xd, self.w, ydot, true, s);
        }
        bias(rows, self.g.ci, self.g.h * self.g.w, dir.b, ydot);
    }
    #[allow(clippy::too_many_arguments)]
    pub fn jvp_backward(
        &self,
        dir: &ConvT<T>,
        rows: usize,
        ybar: &[T],
        ydotbar: &[T],
        xbar: &mut [T],
        xdotbar: Option<&mut [T]>,
        s: &mut [T],
    ) {
        self.g.forward(rows, ybar, self.w, xbar, false, s);
        self.g.forward(rows, ydotbar, dir.w, xbar, true, s);
        if let Some(xdb) = xdotbar {
            self.g.forward(rows, ydotbar, self.w, xdb, false, s);
        }
    }
}
