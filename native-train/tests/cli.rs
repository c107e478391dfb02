//! The `pixelrnn` command end to end on a tiny model and a small IDX dataset written
//! by the tests: train, resume, eval, sample, complete, and one clear line for every
//! kind of bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pixelrnn::checkpoint::Checkpoint;

const SIZE: usize = 8;

/// A Fashion-MNIST-shaped directory of `SIZE` x `SIZE` IDX files: 64 training and 16
/// test images of soft diagonal stripes.
fn dataset(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let idx = |n: usize, salt: usize| {
        let mut b = vec![0, 0, 8, 3];
        for d in [n, SIZE, SIZE] {
            b.extend((d as u32).to_be_bytes());
        }
        for i in 0..n {
            for y in 0..SIZE {
                for x in 0..SIZE {
                    b.push((((x + y + i + salt) % 4) * 80 + (x * y + i) % 7) as u8);
                }
            }
        }
        b
    };
    std::fs::write(data.join("train-images-idx3-ubyte"), idx(64, 0)).unwrap();
    std::fs::write(data.join("t10k-images-idx3-ubyte"), idx(16, 1)).unwrap();
    data
}

fn pixelrnn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pixelrnn"))
        .args(args)
        .output()
        .expect("run pixelrnn")
}

fn succeed(args: &[&str]) -> String {
    let out = pixelrnn(args);
    assert!(
        out.status.success(),
        "pixelrnn {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns its one-line message, asserting that it
/// contains every string of `names`.
fn fail(args: &[&str], names: &[&str]) -> String {
    let out = pixelrnn(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "pixelrnn {args:?} succeeded");
    assert!(
        !err.contains("panicked"),
        "pixelrnn {args:?} panicked:\n{err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "pixelrnn {args:?} printed:\n{err}");
    assert_eq!(err.trim_end().lines().last(), Some(lines[0]), "{err}");
    for name in names {
        assert!(
            lines[0].contains(name),
            "'{}' does not name {name}",
            lines[0]
        );
    }
    lines[0].to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Trains the tiny PixelCNN for `steps` steps into `run`.
fn train(data: &str, run: &Path, steps: u64, extra: &[&str]) -> String {
    train_model("pixelcnn", data, run, steps, extra)
}

/// Trains a tiny `model` for `steps` steps into `run`.
fn train_model(model: &str, data: &str, run: &Path, steps: u64, extra: &[&str]) -> String {
    let steps = steps.to_string();
    let mut args = vec![
        "train",
        "--model",
        model,
        "--data",
        data,
        "--out",
        s(run),
        "--layers",
        "1",
        "--hidden",
        "4",
        "--out-hidden",
        "4",
        "--batch",
        "4",
        "--steps",
        &steps,
        "--log-every",
        "1",
        "--eval-every",
        "0",
        "--eval-limit",
        "8",
        "--checkpoint-every",
        "2",
        "--seed",
        "3",
    ];
    args.extend(extra);
    succeed(&args)
}

/// -log2 p of every sub-pixel of the first `limit` images of `idx` under `checkpoint`,
/// `[N, C, H, W]`, from the numpy evaluator `scripts/reference_eval.py`.
fn reference_eval(checkpoint: &Path, idx: &Path, limit: usize) -> Vec<f32> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/reference_eval.py");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("numpy.npy");
    let py = Command::new("python3")
        .args([script, s(checkpoint), s(idx), "--limit", &limit.to_string()])
        .args(["--per-pixel", s(&out)])
        .output()
        .expect("run python3");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    read_npy(&out).1
}

/// Reads a little-endian float32 .npy file: (shape, values).
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    let inside = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape = inside
        .split(',')
        .filter(|d| !d.trim().is_empty())
        .map(|d| d.trim().parse().unwrap())
        .collect();
    let values = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (shape, values)
}

fn max_gap(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn train_resume_eval_sample_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let data = format!("fashion-mnist:{}", s(&dataset(dir.path())));
    let run = dir.path().join("run");
    let last = run.join("last.safetensors");

    // Train 3 steps, then resume to 5: the optimizer moments and the step carry over.
    train(&data, &run, 3, &[]);
    let first = Checkpoint::load(&last).unwrap();
    assert_eq!(first.optimizer.as_ref().unwrap().step, 3);
    assert!(!run.join("last.safetensors.tmp").exists());
    train(&data, &run, 5, &["--resume"]);
    let resumed = Checkpoint::load(&last).unwrap();
    assert_eq!(resumed.optimizer.as_ref().unwrap().step, 5);
    assert_eq!(resumed.config, first.config);
    assert_ne!(resumed.params, first.params);

    // Resuming gives the same weights as training straight through.
    let straight = dir.path().join("straight");
    train(&data, &straight, 5, &[]);
    let direct = Checkpoint::load(&straight.join("last.safetensors")).unwrap();
    let gap = max_gap(&direct.params, &resumed.params);
    assert!(gap < 1e-4, "resumed and straight runs differ by {gap}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"test_bits_per_dim\""), "{metrics}");

    // eval --json and --per-pixel agree with each other.
    let npy = dir.path().join("bits.npy");
    let out = succeed(&[
        "eval",
        "--checkpoint",
        s(&last),
        "--data",
        &data,
        "--split",
        "test",
        "--limit",
        "6",
        "--json",
        "--per-pixel",
        s(&npy),
    ]);
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let bpd = json["bits_per_dim"].as_f64().unwrap();
    assert_eq!(json["images"].as_u64(), Some(6));
    let nats = json["nats_per_image"].as_f64().unwrap();
    let dims = (SIZE * SIZE) as f64;
    assert!((nats - bpd * std::f64::consts::LN_2 * dims).abs() < 1e-3 * nats);
    let (shape, bits) = read_npy(&npy);
    assert_eq!(shape, [6, 1, SIZE, SIZE]);
    let mean = bits.iter().map(|&b| b as f64).sum::<f64>() / bits.len() as f64;
    assert!((mean - bpd).abs() < 1e-4 * bpd, "{mean} vs {bpd}");
    assert!(bits.iter().all(|b| b.is_finite() && *b >= 0.0));

    // A numpy reimplementation written from docs/checkpoint.md gives the same numbers.
    let idx = dir.path().join("data/t10k-images-idx3-ubyte");
    let np_bits = reference_eval(&last, &idx, 6);
    assert_eq!(np_bits.len(), bits.len());
    let worst = max_gap(&bits, &np_bits);
    assert!(worst < 1e-3, "numpy and pixelrnn differ by {worst} bits");

    // The same seed draws the same samples.
    let sample = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "sample",
            "--checkpoint",
            s(&last),
            "--count",
            "4",
            "--seed",
            "1",
            "--temperature",
            "0.8",
            "--out",
            s(out),
        ];
        args.extend(extra);
        succeed(&args)
    };
    let (one, two) = (dir.path().join("one.png"), dir.path().join("two.png"));
    sample(&one, &[]);
    sample(&two, &["--naive"]);
    let samples = image::open(&one).unwrap();
    assert_eq!(
        samples,
        image::open(&two).unwrap(),
        "same seed, other samples from the incremental and the plain sampler"
    );
    assert_eq!(
        samples.width(),
        samples.height(),
        "4 samples make a 2 x 2 grid"
    );

    // Completions: rows of occluded, 2 completions and the original.
    let completions = dir.path().join("completions.png");
    succeed(&[
        "complete",
        "--checkpoint",
        s(&last),
        "--data",
        &data,
        "--occlude",
        "rect:2,4,4,3",
        "--count",
        "2",
        "--completions",
        "2",
        "--seed",
        "1",
        "--out",
        s(&completions),
    ]);
    let grid = image::open(&completions).unwrap();
    // Two rows as tall as the 2 x 2 sample grid; from the gap g and the pitch c + g
    // between cells, four columns.
    let (w, h) = (grid.width(), grid.height());
    assert_eq!(h, samples.height(), "2 rows");
    let pitch = (w - h) / 2;
    let gap = samples.width() - 2 * pitch;
    assert_eq!(w, 4 * pitch + gap, "4 columns");
}

/// Runs `complete --rank` of one test image with three completions into `png`: they
/// must come most likely first, with their bits/dim.
fn ranked_completions(checkpoint: &Path, data: &str, png: &Path) {
    let out = succeed(&[
        "complete",
        "--checkpoint",
        s(checkpoint),
        "--data",
        data,
        "--count",
        "1",
        "--completions",
        "3",
        "--rank",
        "--out",
        s(png),
    ]);
    assert!(image::open(png).unwrap().width() > 5 * SIZE as u32);
    let line = out
        .lines()
        .find(|l| l.contains("completions at"))
        .expect(&out);
    let bits: Vec<f64> = line
        .split("completions at ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(" bits/dim"))
        .expect(line)
        .split(", ")
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(bits.len(), 3, "{line}");
    assert!(bits.windows(2).all(|w| w[0] <= w[1]), "{line}");
}

/// The mean test bits/dim of a checkpoint on `data`, with `eval --json`, which must
/// name `model`.
fn eval_bits(checkpoint: &Path, data: &str, limit: usize, model: &str) -> f64 {
    let limit = limit.to_string();
    let out = succeed(&[
        "eval",
        "--checkpoint",
        s(checkpoint),
        "--data",
        data,
        "--limit",
        &limit,
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(json["model"], model, "{json}");
    let bits = json["bits_per_dim"].as_f64().unwrap();
    assert!(bits.is_finite() && bits > 0.0, "{json}");
    bits
}

/// The Multi-Scale PixelRNN through every command: both stages train and resume
/// into one checkpoint; eval names its three quantities, which add up, and agrees
/// with the numpy evaluator; sample writes
/// both stages' pictures, the same with --naive; ranked completions come in order;
/// export drops both optimizers' state.
#[test]
fn multiscale_trains_resumes_evaluates_samples_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let data = format!("fashion-mnist:{}", s(&dataset(dir.path())));
    let run = dir.path().join("run");
    let last = run.join("last.safetensors");
    let stages = ["--stages", "pixelcnn,diag-bilstm", "--small-size", "4"];
    let out = train_model("multiscale", &data, &run, 2, &stages);
    assert!(
        out.contains("PixelCNN of 4x4") && out.contains("Diagonal BiLSTM of 8x8 given 4x4"),
        "{out}"
    );
    let out = train_model("multiscale", &data, &run, 4, &["--resume"]);
    assert!(out.contains("small test"), "{out}");
    let ck = Checkpoint::load(&last).unwrap();
    let first = ck.stage1.as_ref().expect("a first stage");
    assert_eq!(ck.config.small, Some(4));
    assert_eq!(
        (first.config.arch.name(), first.config.size),
        ("pixelcnn", 4)
    );
    assert_eq!(ck.optimizer.as_ref().unwrap().step, 4);
    assert_eq!(first.optimizer.as_ref().unwrap().step, 4);

    let out = succeed(&[
        "eval",
        "--checkpoint",
        s(&last),
        "--data",
        &data,
        "--limit",
        "4",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(json["model"], "multiscale", "{json}");
    assert!(json["quantity"].as_str().unwrap().contains("4x4"), "{json}");
    let f = |k: &str| json[k].as_f64().expect(k);
    let (full, small, both) = (
        f("bits_per_dim"),
        f("small_bits_per_dim"),
        f("two_stage_bits_per_dim"),
    );
    // 64 sub-pixels of the image, 16 of the small one.
    let sum = (64.0 * full + 16.0 * small) / 64.0;
    assert!((both - sum).abs() < 1e-6 * sum, "{json}");
    let text = succeed(&[
        "eval",
        "--checkpoint",
        s(&last),
        "--data",
        &data,
        "--limit",
        "4",
    ]);
    assert!(text.contains("given its true 4x4 image"), "{text}");

    // The numpy evaluator, written from docs/checkpoint.md, agrees on the second
    // stage's NLL of every sub-pixel given the true small image.
    let ours = dir.path().join("ours.npy");
    let mut args = vec!["eval", "--checkpoint", s(&last), "--data", &data];
    args.extend(["--limit", "4", "--per-pixel", s(&ours)]);
    succeed(&args);
    let numpy = reference_eval(&last, &dir.path().join("data/t10k-images-idx3-ubyte"), 4);
    let worst = max_gap(&read_npy(&ours).1, &numpy);
    assert!(
        worst < 1e-3,
        "multiscale: numpy and pixelrnn differ by {worst} bits"
    );

    let (fast, naive) = (dir.path().join("fast.png"), dir.path().join("naive.png"));
    for (png, extra) in [(&fast, None), (&naive, Some("--naive"))] {
        let mut args = vec![
            "sample",
            "--checkpoint",
            s(&last),
            "--count",
            "2",
            "--seed",
            "5",
        ];
        args.extend(["--out", s(png)]);
        args.extend(extra);
        let out = succeed(&args);
        assert!(out.contains("4x4 images written"), "{out}");
    }
    for name in ["fast", "fast-small"] {
        let a = std::fs::read(dir.path().join(format!("{name}.png"))).unwrap();
        let b = std::fs::read(
            dir.path()
                .join(format!("{}.png", name.replace("fast", "naive"))),
        );
        assert_eq!(a, b.unwrap(), "{name}: the samplers drew different images");
    }
    assert!(image::open(&fast).unwrap().width() > 2 * SIZE as u32);

    ranked_completions(&last, &data, &dir.path().join("completions.png"));

    let weights = dir.path().join("weights.safetensors");
    succeed(&["export", "--checkpoint", s(&last), "--out", s(&weights)]);
    let exported = Checkpoint::load(&weights).unwrap();
    assert!(exported.optimizer.is_none());
    assert!(exported.stage1.as_ref().unwrap().optimizer.is_none());
    assert_eq!(exported.stage1.unwrap().params, first.params);

    // The second stage alone cannot sample: nothing would draw its small images.
    let mut alone = Checkpoint::load(&last).unwrap();
    alone.stage1 = None;
    let second = dir.path().join("second.safetensors");
    alone.save(&second).unwrap();
    let png = dir.path().join("alone.png");
    fail(
        &["sample", "--checkpoint", s(&second), "--out", s(&png)],
        &["second.safetensors", "4x4", "first stage"],
    );
}

/// The Row LSTM and the Diagonal BiLSTM through every command: train, resume, eval,
/// sample and complete.
#[test]
fn recurrent_models_train_resume_eval_sample_and_complete() {
    for model in ["row-lstm", "diag-bilstm"] {
        let dir = tempfile::tempdir().unwrap();
        let data = format!("fashion-mnist:{}", s(&dataset(dir.path())));
        let run = dir.path().join("run");
        let last = run.join("last.safetensors");

        let out = train_model(model, &data, &run, 2, &[]);
        let title = if model == "row-lstm" {
            "Row LSTM"
        } else {
            "Diagonal BiLSTM"
        };
        assert!(out.contains(title), "{out}");
        train_model(model, &data, &run, 4, &["--resume"]);
        let ck = Checkpoint::load(&last).unwrap();
        assert_eq!(ck.config.arch.name(), model);
        assert_eq!(ck.optimizer.as_ref().unwrap().step, 4);
        eval_bits(&last, &data, 4, model);

        // The numpy evaluator, written from docs/checkpoint.md, agrees.
        let ours = dir.path().join("ours.npy");
        succeed(&[
            "eval",
            "--checkpoint",
            s(&last),
            "--data",
            &data,
            "--limit",
            "4",
            "--per-pixel",
            s(&ours),
        ]);
        let numpy = reference_eval(&last, &dir.path().join("data/t10k-images-idx3-ubyte"), 4);
        let worst = max_gap(&read_npy(&ours).1, &numpy);
        assert!(
            worst < 1e-3,
            "{model}: numpy and pixelrnn differ by {worst} bits"
        );

        let samples = dir.path().join("samples.png");
        succeed(&[
            "sample",
            "--checkpoint",
            s(&last),
            "--count",
            "2",
            "--out",
            s(&samples),
        ]);
        assert!(image::open(&samples).unwrap().width() > 2 * SIZE as u32);
        ranked_completions(&last, &data, &dir.path().join("completions.png"));
    }
}

/// On Fashion-MNIST itself (Debian's files, which scripts/setup.sh installs), 80
/// training steps of a small Row LSTM and Diagonal BiLSTM lower the test bits/dim far
/// below those of the same models after one step.
#[test]
fn recurrent_models_learn_fashion_mnist() {
    for model in ["row-lstm", "diag-bilstm"] {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let last = run.join("last.safetensors");
        let train = |steps: &str, extra: &[&str]| {
            let mut args = vec![
                "train",
                "--model",
                model,
                "--data",
                "fashion-mnist",
                "--out",
                s(&run),
                "--limit",
                "2000",
                "--layers",
                "1",
                "--hidden",
                "8",
                "--out-hidden",
                "16",
                "--batch",
                "8",
                "--steps",
                steps,
                "--eval-every",
                "0",
                "--eval-limit",
                "50",
                "--lr",
                "3e-3",
            ];
            args.extend(extra);
            succeed(&args)
        };
        train("1", &[]);
        let before = eval_bits(&last, "fashion-mnist", 200, model);
        train("81", &["--resume"]);
        let after = eval_bits(&last, "fashion-mnist", 200, model);
        println!("{model}: {before:.3} bits/dim after 1 step, {after:.3} after 81");
        assert!(
            after < before - 2.0,
            "{model}: {before} -> {after} bits/dim"
        );
    }
}

/// Bad input of every kind: each gets one line naming the file or value.
#[test]
fn bad_input_gets_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dataset(dir.path());
    let data = format!("fashion-mnist:{}", s(&data_dir));
    let run = dir.path().join("run");
    train(&data, &run, 2, &[]);
    let last = run.join("last.safetensors");
    let eval = |checkpoint: &Path, data: &str, names: &[&str]| {
        fail(
            &["eval", "--checkpoint", s(checkpoint), "--data", data],
            names,
        )
    };

    // Missing dataset files; an unknown source.
    let nowhere = format!("fashion-mnist:{}", s(&dir.path().join("nowhere")));
    fail(
        &["train", "--data", &nowhere, "--out", s(&run)],
        &["nowhere", "train-images-idx3-ubyte"],
    );
    eval(&last, "mnist", &["'mnist'"]);

    // A multi-scale model with one stage, or a small image that does not divide it.
    let multiscale = |extra: &[&str], names: &[&str]| {
        let mut args = vec![
            "train",
            "--model",
            "multiscale",
            "--data",
            &data,
            "--out",
            s(&run),
        ];
        args.extend(extra);
        fail(&args, names)
    };
    multiscale(&["--stages", "pixelcnn"], &["--stages"]);
    multiscale(&["--small-size", "3"], &["small image size = 3"]);

    // A corrupt dataset file: the header promises more than the file holds.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    let test = std::fs::read(data_dir.join("t10k-images-idx3-ubyte")).unwrap();
    let broken_file = broken.join("t10k-images-idx3-ubyte");
    std::fs::write(&broken_file, &test[..test.len() - 10]).unwrap();
    let broken_src = format!("fashion-mnist:{}", s(&broken));
    eval(
        &last,
        &broken_src,
        &["t10k-images-idx3-ubyte", "header says 16"],
    );

    // Images of the wrong size: not square.
    let mut wide = test[..16].to_vec();
    wide[12..16].copy_from_slice(&(SIZE as u32 * 2).to_be_bytes());
    wide.extend(std::iter::repeat_n(7u8, 16 * SIZE * SIZE * 2));
    std::fs::write(&broken_file, &wide).unwrap();
    eval(&last, &broken_src, &["t10k-images-idx3-ubyte", "8x16"]);

    // A truncated checkpoint, a foreign file, a missing one.
    let bytes = std::fs::read(&last).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    eval(&cut, &data, &["cut.safetensors"]);
    let foreign = dir.path().join("foreign.safetensors");
    std::fs::write(&foreign, b"{\"not\": \"a checkpoint\"}").unwrap();
    fail(
        &["sample", "--checkpoint", s(&foreign), "--out", "x.png"],
        &["foreign.safetensors"],
    );
    eval(
        &dir.path().join("absent.safetensors"),
        &data,
        &["absent.safetensors"],
    );

    // A configuration that does not match the weights.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    meta.insert("hidden".into(), "8".into());
    let mismatched = dir.path().join("mismatch.safetensors");
    let rewritten = safetensors::serialize(st.tensors(), Some(meta)).unwrap();
    std::fs::write(&mismatched, rewritten).unwrap();
    eval(
        &mismatched,
        &data,
        &["mismatch.safetensors", "input.weight"],
    );

    // Resuming without a checkpoint; occlusions outside the image or misspelt.
    let fresh = dir.path().join("fresh");
    fail(
        &["train", "--data", &data, "--out", s(&fresh), "--resume"],
        &["--resume", "last.safetensors"],
    );
    for occlude in ["rect:6,6,4,4", "top"] {
        fail(
            &[
                "complete",
                "--checkpoint",
                s(&last),
                "--data",
                &data,
                "--occlude",
                occlude,
                "--out",
                "x.png",
            ],
            &[occlude],
        );
    }
}

#[test]
fn a_diverging_run_stops_without_a_broken_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = format!("fashion-mnist:{}", s(&dataset(dir.path())));
    let run = dir.path().join("run");
    train(&data, &run, 2, &[]);

    let msg = fail(
        &[
            "train",
            "--data",
            &data,
            "--out",
            s(&run),
            "--resume",
            "--steps",
            "40",
            "--lr",
            "1e30",
            "--log-every",
            "1",
            "--eval-every",
            "0",
            "--checkpoint-every",
            "1",
        ],
        &["--lr"],
    );
    assert!(msg.contains("NaN") || msg.contains("inf"), "{msg}");

    // The last checkpoint is whole and finite: diverged weights were never written.
    let after = Checkpoint::load(&run.join("last.safetensors")).unwrap();
    assert!(after.params.iter().all(|p| p.is_finite()));
    assert!(!run.join("last.safetensors.tmp").exists());
    assert!(after.optimizer.unwrap().step >= 2);
}

/// `bench --json` times the GPU step and the CPU reference of each model, and
/// PixelCNN's convolution kernels, with every figure positive and consistent.
#[test]
fn bench_reports_throughput_of_every_model_and_both_kernel_variants() {
    for portable in [false, true] {
        let mut args = vec![
            "bench",
            "--layers",
            "1",
            "--hidden",
            "8",
            "--out-hidden",
            "8",
            "--batch",
            "2",
            "--reps",
            "1",
            "--json",
        ];
        if portable {
            args.push("--portable");
        }
        let out = succeed(&args);
        let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        if portable {
            assert_eq!(json["subgroup_kernels"], false, "{json}");
        }
        let models = json["models"].as_array().expect("a list of models");
        let names: Vec<_> = models
            .iter()
            .map(|m| m["model"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["pixelcnn", "row-lstm", "diag-bilstm", "multiscale"],
            "{json}"
        );
        for m in models {
            let mut keys = vec![
                "gpu_step_s",
                "gpu_images_per_s",
                "gpu_step_gflops",
                "cpu_reference_step_s",
                "parameters",
            ];
            if m["model"] == "pixelcnn" {
                keys.extend([
                    "conv_forward_gflops",
                    "conv_weight_grad_gflops",
                    "conv_input_grad_gflops",
                ]);
            }
            for key in keys {
                let v = m[key].as_f64().unwrap_or(f64::NAN);
                assert!(v.is_finite() && v > 0.0, "{key} = {v} in {m}");
            }
            let step = m["gpu_step_s"].as_f64().unwrap();
            let rate = m["gpu_images_per_s"].as_f64().unwrap();
            assert!((step * rate - 2.0).abs() < 1e-6, "{m}");
        }
    }
}

/// `bench sample --json` prints one list with each model's plain and incremental
/// sampling time per image, the multi-scale model's included.
#[test]
fn bench_sample_reports_both_samplers() {
    let out = succeed(&[
        "bench",
        "sample",
        "--layers",
        "1",
        "--hidden",
        "8",
        "--out-hidden",
        "8",
        "--batch",
        "2",
        "--reps",
        "1",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let rows = json.as_array().expect("a list");
    let names: Vec<_> = rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(names, ["pixelcnn", "row-lstm", "diag-bilstm", "multiscale"]);
    for r in rows {
        let naive = r["naive_ms_per_image"].as_f64().unwrap();
        assert!(naive.is_finite() && naive > 0.0, "{r}");
        let incremental = r["incremental_ms_per_image"].as_f64().unwrap();
        assert!(incremental.is_finite() && incremental > 0.0, "{r}");
    }
}
