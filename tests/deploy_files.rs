//! The deployment files and batch examples are what the README says: `deploy/k8s/p2p-batch.yaml` parses as YAML
//! and is an Indexed Job whose `--shards` equals its completions, that runs `p2p-wgpu batch` with `--out` on a
//! mounted shared (ReadWriteMany) volume and asks for one GPU per pod; `deploy/slurm/p2p-batch.sbatch` is valid
//! bash, an array job with one GPU per task that passes the jobs file, output folder and model to `batch`;
//! `examples/jobs.jsonl` and `examples/pairs.jsonl` parse as the batch reads them. No cluster is started here
//! (deploy/slurm/test-local-cluster.sh runs the sbatch file on a real one-node Slurm).
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &str) -> String {
    std::fs::read_to_string(root().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn at<'a>(y: &'a Yaml, path: &[&str]) -> &'a Yaml {
    path.iter().fold(y, |y, k| &y[*k])
}

#[test]
fn the_kubernetes_manifest_is_an_indexed_job_on_a_shared_volume() {
    let docs = YamlLoader::load_from_str(&read("deploy/k8s/p2p-batch.yaml")).expect("valid YAML");
    let job = docs.iter().find(|d| d["kind"].as_str() == Some("Job")).expect("a Job document");
    assert_eq!(job["apiVersion"].as_str(), Some("batch/v1"));
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"), "not an Indexed Job");
    let completions = spec["completions"].as_i64().expect("completions");
    let parallelism = spec["parallelism"].as_i64().expect("parallelism");
    assert!(completions >= 1 && (1..=completions).contains(&parallelism));
    let pod = at(spec, &["template", "spec"]);
    assert!(
        matches!(pod["restartPolicy"].as_str(), Some("Never" | "OnFailure")),
        "an Indexed Job's pods need Never or OnFailure"
    );
    let containers = pod["containers"].as_vec().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let cmd: Vec<&str> = c["command"].as_vec().expect("command").iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(&cmd[..2], ["p2p-wgpu", "batch"]);
    let flag = |f: &str| cmd.iter().position(|a| *a == f).map(|i| cmd[i + 1]).unwrap_or_else(|| panic!("no {f}"));
    assert_eq!(flag("--shards").parse::<i64>().unwrap(), completions, "--shards must equal completions");
    let out = flag("--out");
    assert_eq!(at(c, &["resources", "limits", "nvidia.com/gpu"]).as_i64(), Some(1));
    let mounts = c["volumeMounts"].as_vec().expect("volumeMounts");
    let mount = mounts
        .iter()
        .find(|m| Path::new(out).starts_with(m["mountPath"].as_str().unwrap()))
        .expect("--out is on a mounted volume");
    let vol = pod["volumes"].as_vec().unwrap().iter().find(|v| v["name"] == mount["name"]).expect("the mount's volume");
    let claim = at(vol, &["persistentVolumeClaim", "claimName"]).as_str().expect("a claim");
    let pvc = docs
        .iter()
        .find(|d| {
            d["kind"].as_str() == Some("PersistentVolumeClaim") && at(d, &["metadata", "name"]).as_str() == Some(claim)
        })
        .expect("the claim is defined");
    let modes = at(pvc, &["spec", "accessModes"]).as_vec().unwrap();
    assert!(modes.iter().any(|m| m.as_str() == Some("ReadWriteMany")), "pods on several nodes need ReadWriteMany");
}

#[test]
fn the_slurm_file_is_an_array_job_with_a_gpu_per_task() {
    let text = read("deploy/slurm/p2p-batch.sbatch");
    let directives: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("#SBATCH ")).collect();
    for want in ["--array=", "--gres=gpu:1", "--requeue"] {
        assert!(directives.iter().any(|d| d.starts_with(want)), "no #SBATCH {want}");
    }
    assert!(text.contains("batch \"$JOBS\" --out \"$OUT\""), "does not run batch on $JOBS into $OUT");
    let ok = std::process::Command::new("bash").arg("-n").arg(root().join("deploy/slurm/p2p-batch.sbatch")).status();
    assert!(ok.expect("bash").success(), "bash -n failed");
    let ok =
        std::process::Command::new("bash").arg("-n").arg(root().join("deploy/slurm/test-local-cluster.sh")).status();
    assert!(ok.expect("bash").success(), "bash -n failed on the cluster test");
}

#[test]
fn the_examples_parse_as_the_batch_reads_them() {
    let jobs = p2p_wgpu::batch::parse_jobs("examples/jobs.jsonl", &read("examples/jobs.jsonl")).unwrap();
    assert!(jobs.len() >= 10);
    for j in &jobs {
        j.request.validate().unwrap_or_else(|e| panic!("{}: {e}", j.id));
    }
    let pairs = p2p_wgpu::batch::pairs::expand_pairs("examples/pairs.jsonl", &read("examples/pairs.jsonl"), 2).unwrap();
    assert_eq!(pairs.len(), 6);
}
