//! Datasets: Fashion-MNIST (IDX files), CIFAR-10 (binary batches) and folders of
//! PNG/JPEG images, all as bytes `[N, H, W, C]`.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::Error;

/// Where Debian's `dataset-fashion-mnist` package installs the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// A data source as written on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `fashion-mnist` or `fashion-mnist:DIR`: the four IDX files, gzipped or not.
    FashionMnist(PathBuf),
    /// `cifar10:DIR`: `data_batch_1.bin` .. `data_batch_5.bin` and `test_batch.bin`.
    Cifar10(PathBuf),
    /// `images:DIR`: every PNG/JPEG in DIR, sorted by name; every tenth is test data.
    Images(PathBuf),
}

/// Which part of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Training images.
    Train,
    /// Held-out test images.
    Test,
}

impl std::str::FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "train" => Ok(Self::Train),
            "test" => Ok(Self::Test),
            _ => Err(Error::Data(format!("split '{s}': expected train or test"))),
        }
    }
}

impl std::str::FromStr for Source {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let (kind, dir) = s.split_once(':').unwrap_or((s, ""));
        match (kind, dir) {
            ("fashion-mnist", "") => Ok(Self::FashionMnist(FASHION_MNIST_DIR.into())),
            ("fashion-mnist", d) => Ok(Self::FashionMnist(d.into())),
            ("cifar10", d) if !d.is_empty() => Ok(Self::Cifar10(d.into())),
            ("images", d) if !d.is_empty() => Ok(Self::Images(d.into())),
            _ => Err(Error::Data(format!(
                "data source '{s}': expected fashion-mnist[:DIR], cifar10:DIR or images:DIR"
            ))),
        }
    }
}

/// Images as bytes `[N, H, W, C]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Pixel bytes, `[N, H, W, C]`.
    pub images: Vec<u8>,
    /// Height and width.
    pub size: usize,
    /// Colour channels: 1 or 3.
    pub channels: usize,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len() / self.image_len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Bytes per image.
    pub fn image_len(&self) -> usize {
        self.size * self.size * self.channels
    }

    /// Image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * self.image_len()..][..self.image_len()]
    }

    /// Keeps the first `n` images.
    pub fn truncate(&mut self, n: usize) {
        self.images.truncate(n * self.image_len());
    }

    /// Converts to `channels` and `size` x `size`: grey is repeated into RGB, RGB is
    /// turned to grey by its luma, sizes are changed by a centre crop to a square and
    /// a triangle-filter resize.
    pub fn convert(self, channels: usize, size: usize) -> Result<Self, Error> {
        if channels == self.channels && size == self.size {
            return Ok(self);
        }
        let mut out = Vec::with_capacity(self.len() * size * size * channels);
        for i in 0..self.len() {
            let img = to_dynamic(self.image(i), self.size, self.size, self.channels)?;
            out.extend(from_dynamic(&img, channels, size));
        }
        Ok(Self {
            images: out,
            size,
            channels,
        })
    }
}

fn to_dynamic(data: &[u8], w: usize, h: usize, c: usize) -> Result<image::DynamicImage, Error> {
    let bad = || Error::Data(format!("{w}x{h}x{c} image has {} bytes", data.len()));
    Ok(if c == 1 {
        image::GrayImage::from_raw(w as u32, h as u32, data.to_vec())
            .ok_or_else(bad)?
            .into()
    } else {
        image::RgbImage::from_raw(w as u32, h as u32, data.to_vec())
            .ok_or_else(bad)?
            .into()
    })
}

/// Centre-crops `img` to a square, resizes it to `size` and returns `[H, W, C]` bytes.
pub fn from_dynamic(img: &image::DynamicImage, channels: usize, size: usize) -> Vec<u8> {
    let (w, h) = (img.width(), img.height());
    let side = w.min(h);
    let square = img.crop_imm((w - side) / 2, (h - side) / 2, side, side);
    let resized = if side as usize == size {
        square
    } else {
        square.resize_exact(
            size as u32,
            size as u32,
            image::imageops::FilterType::Triangle,
        )
    };
    if channels == 1 {
        resized.to_luma8().into_raw()
    } else {
        resized.to_rgb8().into_raw()
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::Data(format!("{}: corrupt gzip data ({e})", path.display())))?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

/// Parses an IDX file of unsigned bytes with 3 dimensions `[N, rows, cols]`.
pub fn parse_idx_images(bytes: &[u8], name: &str) -> Result<Dataset, Error> {
    let bad = |why: &str| Error::Data(format!("{name}: {why}"));
    if bytes.len() < 16 || bytes[..4] != [0, 0, 8, 3] {
        return Err(bad("not an IDX file of 3-D unsigned bytes"));
    }
    let dim = |i: usize| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap());
    let (n, rows, cols) = (dim(0) as usize, dim(1) as usize, dim(2) as usize);
    if rows != cols || rows == 0 {
        return Err(bad(&format!("images are {rows}x{cols}, expected square")));
    }
    if bytes.len() != 16 + n * rows * cols {
        return Err(bad(&format!(
            "header says {n} images of {rows}x{cols} ({} bytes), the file holds {}",
            16 + n * rows * cols,
            bytes.len()
        )));
    }
    Ok(Dataset {
        images: bytes[16..].to_vec(),
        size: rows,
        channels: 1,
    })
}

fn fashion_mnist(dir: &Path, split: Split) -> Result<Dataset, Error> {
    let stem = match split {
        Split::Train => "train-images-idx3-ubyte",
        Split::Test => "t10k-images-idx3-ubyte",
    };
    let gz = dir.join(format!("{stem}.gz"));
    let path = if gz.exists() { gz } else { dir.join(stem) };
    parse_idx_images(&read_file(&path)?, &path.display().to_string())
}

/// Bytes per CIFAR-10 record: a label, then 32x32 R, G and B planes.
const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

fn cifar10(dir: &Path, split: Split) -> Result<Dataset, Error> {
    let files: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".into()],
    };
    let mut images = Vec::new();
    for f in files {
        let path = dir.join(f);
        let bytes = read_file(&path)?;
        if bytes.is_empty() || bytes.len() % CIFAR_RECORD != 0 {
            return Err(Error::Data(format!(
                "{}: {} bytes is not a whole number of {CIFAR_RECORD}-byte CIFAR-10 records",
                path.display(),
                bytes.len()
            )));
        }
        for rec in bytes.chunks_exact(CIFAR_RECORD) {
            let planes = &rec[1..];
            for p in 0..1024 {
                images.extend([planes[p], planes[1024 + p], planes[2048 + p]]);
            }
        }
    }
    Ok(Dataset {
        images,
        size: 32,
        channels: 3,
    })
}

fn image_folder(dir: &Path, split: Split, channels: usize, size: usize) -> Result<Dataset, Error> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            ["png", "jpg", "jpeg"].contains(&ext.to_ascii_lowercase().as_str())
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(Error::Data(format!(
            "{}: no PNG or JPEG images",
            dir.display()
        )));
    }
    let mut images = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        if (i % 10 == 9) != (split == Split::Test) {
            continue;
        }
        let img = image::open(path)
            .map_err(|e| Error::Data(format!("{}: cannot decode image ({e})", path.display())))?;
        images.extend(from_dynamic(&img, channels, size));
    }
    Ok(Dataset {
        images,
        size,
        channels,
    })
}

/// Loads `split` of `source`, converted to `channels` and `size` when given (else the
/// dataset's own; image folders default to 3 channels and 32 x 32).
pub fn load(
    source: &Source,
    split: Split,
    channels: Option<usize>,
    size: Option<usize>,
) -> Result<Dataset, Error> {
    let data = match source {
        Source::FashionMnist(dir) => fashion_mnist(dir, split)?,
        Source::Cifar10(dir) => cifar10(dir, split)?,
        Source::Images(dir) => image_folder(dir, split, channels.unwrap_or(3), size.unwrap_or(32))?,
    };
    if data.is_empty() {
        return Err(Error::Data(format!("{source:?} has no {split:?} images")));
    }
    let (c, s) = (channels.unwrap_or(data.channels), size.unwrap_or(data.size));
    data.convert(c, s)
}
