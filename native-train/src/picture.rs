//! Grids of images as PNG files.

use std::path::Path;

use anyhow::Context;

/// Pixels of screen per image pixel.
const SCALE: usize = 4;
/// Gap between cells, in screen pixels.
const GAP: usize = 4;

/// Writes `rows` x `cols` images (`[H, W, C]` bytes each, row-major in `cells`) as one
/// PNG, scaled up with nearest-neighbour so small images stay legible.
pub fn save_grid(
    path: &Path,
    cells: &[&[u8]],
    cols: usize,
    size: usize,
    channels: usize,
) -> anyhow::Result<()> {
    let rows = cells.len().div_ceil(cols);
    let cell = size * SCALE;
    let width = cols * cell + (cols + 1) * GAP;
    let height = rows * cell + (rows + 1) * GAP;
    let mut canvas = image::RgbImage::from_pixel(width as u32, height as u32, image::Rgb([255; 3]));
    for (n, img) in cells.iter().enumerate() {
        let (r, c) = (n / cols, n % cols);
        let (x0, y0) = (GAP + c * (cell + GAP), GAP + r * (cell + GAP));
        for y in 0..cell {
            for x in 0..cell {
                let p = ((y / SCALE) * size + x / SCALE) * channels;
                let rgb = if channels == 1 {
                    [img[p]; 3]
                } else {
                    [img[p], img[p + 1], img[p + 2]]
                };
                canvas.put_pixel((x0 + x) as u32, (y0 + y) as u32, image::Rgb(rgb));
            }
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    canvas
        .save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// An image with the hidden sub-pixels painted mid-grey, for the "occluded" column.
pub fn occluded(image: &[u8], known: &[bool]) -> Vec<u8> {
    image
        .iter()
        .zip(known)
        .map(|(&v, &k)| if k { v } else { 128 })
        .collect()
}
