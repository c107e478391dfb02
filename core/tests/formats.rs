//! Checkpoints and dataset files: round trips, and one clear error for each kind of
//! bad input.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use pixelrnn::checkpoint::{Checkpoint, OptimizerState};
use pixelrnn::data::{self, Source, Split};
use pixelrnn::model::{init_params, Arch, ModelConfig, ParamLayout};
use pixelrnn::Error;

fn config() -> ModelConfig {
    ModelConfig {
        arch: Arch::PixelCnn,
        channels: 3,
        size: 6,
        layers: 2,
        hidden: 12,
        out_hidden: 8,
        small: None,
    }
}

fn checkpoint() -> Checkpoint {
    let c = config();
    let params = init_params(&c, 7);
    let m: Vec<f32> = params.iter().map(|p| p * 0.5).collect();
    let v: Vec<f32> = params.iter().map(|p| p * p).collect();
    Checkpoint {
        config: c,
        params,
        optimizer: Some(OptimizerState {
            name: "rmsprop".into(),
            step: 42,
            m,
            v,
        }),
        info: HashMap::from([("data".to_string(), "fashion-mnist".to_string())]),
        stage1: None,
    }
}

/// The message of a checkpoint error, asserting that it names `path`.
fn checkpoint_error(result: Result<Checkpoint, Error>, path: &str) -> String {
    match result {
        Err(e @ Error::Checkpoint { .. }) | Err(e @ Error::Io { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(path), "'{msg}' does not name {path}");
            assert!(!msg.contains('\n'), "'{msg}' is not one line");
            msg
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

#[test]
fn checkpoint_round_trips_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("last.safetensors");
    let ck = checkpoint();
    ck.save(&path).unwrap();
    assert!(!dir.path().join("last.safetensors.tmp").exists());
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(back.config, ck.config);
    assert_eq!(back.params, ck.params);
    assert_eq!(back.optimizer, ck.optimizer);
    assert_eq!(
        back.info.get("data").map(String::as_str),
        Some("fashion-mnist")
    );
}

#[test]
fn checkpoint_stores_documented_names_and_shapes() {
    let bytes = checkpoint().to_bytes().unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let shape = |n: &str| st.tensor(n).unwrap().shape().to_vec();
    // 2h = 24 maps in the residual stream, h = 12 inside blocks.
    assert_eq!(shape("input.weight"), [24, 3, 7, 7]);
    assert_eq!(shape("block0.conv1.weight"), [12, 24, 1, 1]);
    assert_eq!(shape("block1.conv2.weight"), [12, 12, 3, 3]);
    assert_eq!(shape("block1.conv3.weight"), [24, 12, 1, 1]);
    assert_eq!(shape("output.conv1.weight"), [8, 24, 1, 1]);
    assert_eq!(shape("output.conv2.weight"), [768, 8, 1, 1]);
    assert_eq!(shape("output.conv2.bias"), [768]);
    assert_eq!(shape("optimizer.m.block1.conv2.weight"), [12, 12, 3, 3]);

    // Mask A on the first layer: the centre tap of an R output sees no input colour,
    // and a G output sees R (input 0) only; the taps below the centre row are zero.
    let w: Vec<f32> = st
        .tensor("input.weight")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let at = |o: usize, i: usize, y: usize, x: usize| w[((o * 3 + i) * 7 + y) * 7 + x];
    for i in 0..3 {
        assert_eq!(at(0, i, 3, 3), 0.0, "R output sees input colour {i}");
    }
    assert_ne!(at(8, 0, 3, 3), 0.0, "G output must see R");
    assert_eq!(at(8, 1, 3, 3), 0.0);
    assert!((0..24).all(|o| (0..3).all(|i| (0..7).all(|x| at(o, i, 4, x) == 0.0))));
    assert!((0..24).all(|o| (0..3).all(|i| at(o, i, 3, 4) == 0.0)));
    assert_ne!(at(0, 0, 2, 3), 0.0, "the row above is context");
}

/// Row LSTM and Diagonal BiLSTM checkpoints round-trip, with the recurrent layers'
/// tensors under their documented names and shapes.
#[test]
fn recurrent_checkpoints_round_trip_with_documented_names() {
    for arch in [Arch::RowLstm, Arch::DiagBiLstm] {
        let c = ModelConfig { arch, ..config() };
        let layout = ParamLayout::new(&c);
        let mut params = init_params(&c, 3);
        for i in 0..layout.vectors.len() {
            for (j, v) in layout.vector_mut(&mut params, i).iter_mut().enumerate() {
                *v = 0.01 * (i + j) as f32 - 0.1;
            }
        }
        let ck = Checkpoint {
            config: c,
            params: params.clone(),
            optimizer: None,
            info: HashMap::new(),
            stage1: None,
        };
        let bytes = ck.to_bytes().unwrap();
        let back = Checkpoint::from_bytes(&bytes, "x.safetensors").unwrap();
        assert_eq!(back.config, c);
        assert_eq!(back.params, params);

        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let shape = |n: &str| st.tensor(n).unwrap().shape().to_vec();
        // n = h = 12 states, 4n = 48 gates, 2h = 24 maps.
        let dirs: &[&str] = match arch {
            Arch::RowLstm => &[""],
            _ => &[".lr", ".rl"],
        };
        let (k, taps) = if arch == Arch::RowLstm {
            (3, 3)
        } else {
            (1, 2)
        };
        for l in 0..2 {
            for d in dirs {
                assert_eq!(shape(&format!("layer{l}{d}.is.weight")), [48, 24, k, k]);
                assert_eq!(shape(&format!("layer{l}{d}.is.bias")), [48]);
                assert_eq!(shape(&format!("layer{l}{d}.ss.weight")), [taps, 12, 48]);
                assert_eq!(shape(&format!("layer{l}{d}.init")), [2, 12]);
            }
            assert_eq!(shape(&format!("layer{l}.out.weight")), [24, 12, 1, 1]);
        }
        assert_eq!(st.names().len(), 6 + 2 * (4 * dirs.len() + 2));
    }
}

/// A Multi-Scale PixelRNN checkpoint round-trips with both stages (and both
/// optimizers' state): the first stage under `stage1.`, the second stage's
/// conditioning under its documented names; a first stage of the wrong size is named.
#[test]
fn multiscale_checkpoints_round_trip_with_documented_names() {
    let full = ModelConfig {
        arch: Arch::DiagBiLstm,
        size: 12,
        small: Some(3),
        ..config()
    };
    let small = ModelConfig {
        arch: Arch::RowLstm,
        size: 3,
        ..config()
    };
    let stage = |c: ModelConfig, seed| {
        let params = init_params(&c, seed);
        Checkpoint {
            config: c,
            optimizer: Some(OptimizerState {
                name: "adam".into(),
                step: seed,
                m: params.iter().map(|p| p * 0.5).collect(),
                v: params.iter().map(|p| p * p).collect(),
            }),
            params,
            info: HashMap::new(),
            stage1: None,
        }
    };
    let mut ck = stage(full, 4);
    ck.info.insert("seed".into(), "4".into());
    ck.stage1 = Some(Box::new(stage(small, 5)));
    let bytes = ck.to_bytes().unwrap();
    let back = Checkpoint::from_bytes(&bytes, "ms.safetensors").unwrap();
    assert_eq!(back, ck);

    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let shape = |n: &str| st.tensor(n).unwrap().shape().to_vec();
    // 12 / 3 = 4: two doubling layers, 3 colours to h = 12 maps, then 12 to 12.
    assert_eq!(shape("upsample0.weight"), [4, 4, 3, 12]);
    assert_eq!(shape("upsample0.bias"), [12]);
    assert_eq!(shape("upsample1.weight"), [4, 4, 12, 12]);
    for l in 0..2 {
        for d in ["lr", "rl"] {
            assert_eq!(shape(&format!("layer{l}.{d}.cond.weight")), [48, 12, 1, 1]);
        }
    }
    assert_eq!(shape("stage1.layer0.is.weight"), [48, 24, 3, 3]);
    assert_eq!(shape("stage1.optimizer.m.layer0.is.weight"), [48, 24, 3, 3]);

    // The first stage must model the small images the second is conditioned on.
    let mut wrong = ck.clone();
    wrong.stage1 = Some(Box::new(stage(ModelConfig { size: 6, ..small }, 5)));
    let bytes = wrong.to_bytes().unwrap();
    let msg = checkpoint_error(
        Checkpoint::from_bytes(&bytes, "bad.safetensors"),
        "bad.safetensors",
    );
    assert!(msg.contains("6x6") && msg.contains("3x3"), "{msg}");
}

#[test]
fn truncated_checkpoint_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.safetensors");
    let bytes = checkpoint().to_bytes().unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = checkpoint_error(Checkpoint::load(&path), "cut.safetensors");
    assert!(msg.contains("safetensors"), "{msg}");
}

#[test]
fn foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();

    // Not safetensors at all.
    let png = dir.path().join("picture.safetensors");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n rest of a picture").unwrap();
    checkpoint_error(Checkpoint::load(&png), "picture.safetensors");

    // Valid safetensors from elsewhere: no pixelrnn metadata.
    let other = dir.path().join("other.safetensors");
    let data = vec![0u8; 16];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &data).unwrap();
    let bytes = safetensors::serialize([("weight", view)], None).unwrap();
    std::fs::write(&other, bytes).unwrap();
    let msg = checkpoint_error(Checkpoint::load(&other), "other.safetensors");
    assert!(msg.contains("not a pixelrnn checkpoint"), "{msg}");

    // Missing file.
    let msg = checkpoint_error(
        Checkpoint::load(&dir.path().join("absent.safetensors")),
        "absent.safetensors",
    );
    assert!(msg.contains("No such file"), "{msg}");
}

/// Rewrites the metadata value `key` of a checkpoint's safetensors header.
fn with_metadata(bytes: &[u8], key: &str, value: &str) -> Vec<u8> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    meta.insert(key.into(), value.into());
    let tensors: Vec<_> = st.tensors();
    safetensors::serialize(tensors, Some(meta)).unwrap()
}

#[test]
fn config_that_does_not_match_the_weights_is_refused() {
    let bytes = checkpoint().to_bytes().unwrap();

    let wider = with_metadata(&bytes, "hidden", "16");
    let msg = Checkpoint::from_bytes(&wider, "wide.safetensors")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("wide.safetensors"), "{msg}");
    assert!(
        msg.contains("block0.conv1.weight") || msg.contains("input.weight"),
        "{msg}"
    );

    let deeper = with_metadata(&bytes, "layers", "3");
    let msg = Checkpoint::from_bytes(&deeper, "deep.safetensors")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing") || msg.contains("needs"), "{msg}");

    let odd = with_metadata(&bytes, "hidden", "ten");
    let msg = Checkpoint::from_bytes(&odd, "odd.safetensors")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("'hidden'"), "{msg}");
}

#[test]
fn non_finite_weights_are_refused() {
    let mut ck = checkpoint();
    ck.params[5] = f32::NAN;
    let bytes = ck.to_bytes().unwrap();
    let msg = Checkpoint::from_bytes(&bytes, "nan.safetensors")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("NaN"), "{msg}");
}

/// An IDX file of `n` images of `rows` x `cols` bytes, with the header's count `claim`.
fn idx(n: usize, rows: usize, cols: usize, claim: usize) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for d in [claim, rows, cols] {
        b.extend((d as u32).to_be_bytes());
    }
    b.extend((0..n * rows * cols).map(|i| (i * 7 % 256) as u8));
    b
}

fn gzip(path: &Path, bytes: &[u8]) {
    let file = std::fs::File::create(path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap();
}

#[test]
fn fashion_mnist_files_load_gzipped_or_plain() {
    let dir = tempfile::tempdir().unwrap();
    gzip(
        &dir.path().join("train-images-idx3-ubyte.gz"),
        &idx(5, 28, 28, 5),
    );
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), idx(3, 28, 28, 3)).unwrap();
    let source: Source = format!("fashion-mnist:{}", dir.path().display())
        .parse()
        .unwrap();

    let train = data::load(&source, Split::Train, None, None).unwrap();
    assert_eq!((train.len(), train.size, train.channels), (5, 28, 1));
    assert_eq!(train.image(1)[0], (784 * 7 % 256) as u8);
    let test = data::load(&source, Split::Test, None, None).unwrap();
    assert_eq!(test.len(), 3);

    // Converted on request: 14 x 14 RGB.
    let small = data::load(&source, Split::Test, Some(3), Some(14)).unwrap();
    assert_eq!((small.len(), small.size, small.channels), (3, 14, 3));
    assert_eq!(small.image_len(), 14 * 14 * 3);
}

#[test]
fn bad_dataset_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let source: Source = format!("fashion-mnist:{}", dir.path().display())
        .parse()
        .unwrap();
    let err = |split| {
        data::load(&source, split, None, None)
            .unwrap_err()
            .to_string()
    };

    // Missing.
    let msg = err(Split::Train);
    assert!(msg.contains("train-images-idx3-ubyte"), "{msg}");

    // Truncated: the header promises more images than the file holds.
    std::fs::write(
        dir.path().join("train-images-idx3-ubyte"),
        idx(4, 28, 28, 5),
    )
    .unwrap();
    let msg = err(Split::Train);
    assert!(
        msg.contains("train-images-idx3-ubyte") && msg.contains("header says 5"),
        "{msg}"
    );

    // Images of the wrong shape.
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), idx(2, 28, 20, 2)).unwrap();
    let msg = err(Split::Test);
    assert!(msg.contains("28x20"), "{msg}");

    // Not an IDX file; a corrupt gzip stream.
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), b"hello").unwrap();
    assert!(err(Split::Test).contains("not an IDX file"));
    std::fs::write(
        dir.path().join("t10k-images-idx3-ubyte.gz"),
        b"\x1f\x8bnot gzip",
    )
    .unwrap();
    assert!(err(Split::Test).contains("t10k-images-idx3-ubyte.gz"));

    // Unknown source names.
    let msg = "mnist".parse::<Source>().unwrap_err().to_string();
    assert!(msg.contains("'mnist'"), "{msg}");
}

#[test]
fn cifar10_records_are_planar_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let record = |label: u8, seed: usize| {
        let mut r = vec![label];
        r.extend((0..3072).map(|i| ((i + seed) % 251) as u8));
        r
    };
    for i in 1..=5 {
        std::fs::write(dir.path().join(format!("data_batch_{i}.bin")), record(1, i)).unwrap();
    }
    let mut test = record(2, 0);
    test.extend(record(3, 9));
    std::fs::write(dir.path().join("test_batch.bin"), &test).unwrap();
    let source: Source = format!("cifar10:{}", dir.path().display()).parse().unwrap();

    let train = data::load(&source, Split::Train, None, None).unwrap();
    assert_eq!((train.len(), train.size, train.channels), (5, 32, 3));
    let t = data::load(&source, Split::Test, None, None).unwrap();
    assert_eq!(t.len(), 2);
    // Pixel 1 of the second test image: R, G, B from the three planes.
    let px = &t.image(1)[3..6];
    assert_eq!(
        px,
        [
            (1 + 9) as u8,
            ((1024 + 1 + 9) % 251) as u8,
            ((2048 + 1 + 9) % 251) as u8
        ]
    );

    std::fs::write(dir.path().join("test_batch.bin"), &test[..4000]).unwrap();
    let msg = data::load(&source, Split::Test, None, None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("test_batch.bin") && msg.contains("4000 bytes"),
        "{msg}"
    );
}

#[test]
fn image_folders_are_cropped_resized_and_split() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..10 {
        // 40 x 20: the centre 20 x 20 square is white, the sides black.
        let img = image::RgbImage::from_fn(40, 20, |x, _| {
            let v = if (10..30).contains(&x) { 255 } else { 0 };
            image::Rgb([v, v, v])
        });
        img.save(dir.path().join(format!("img{i}.png"))).unwrap();
    }
    let source: Source = format!("images:{}", dir.path().display()).parse().unwrap();
    let train = data::load(&source, Split::Train, Some(1), Some(8)).unwrap();
    let test = data::load(&source, Split::Test, Some(1), Some(8)).unwrap();
    assert_eq!((train.len(), test.len()), (9, 1));
    assert_eq!((test.size, test.channels), (8, 1));
    assert!(
        test.image(0).iter().all(|&v| v == 255),
        "{:?}",
        test.image(0)
    );

    std::fs::write(dir.path().join("img9.png"), b"not a png").unwrap();
    let msg = data::load(&source, Split::Test, Some(1), Some(8))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("img9.png") && msg.contains("cannot decode"),
        "{msg}"
    );
}
