//! Lints Dockerfile, docker-compose.yml and docker-compose.env in a few milliseconds (`.ci/image`
//! builds and runs them, which takes minutes): every service has a health check that needs
//! no shell tool, the runtime user is not root, every base image is pinned (no `latest`, the
//! toolchain to an exact release no older than `rust-version`), and all snapgate replicas share
//! one `auth.master_key` and one MPS (the one emulator service, with a key pair it accepts); the
//! Kubernetes example agrees with the image.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use yaml_rust2::{Yaml, YamlLoader};

fn read(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Dockerfile instructions: (keyword upper-cased, arguments), continuation lines joined,
/// comments and the parser directive dropped.
fn dockerfile() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            pending.push_str(body);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (keyword, args) = pending
            .split_once(char::is_whitespace)
            .unwrap_or((&pending, ""));
        out.push((keyword.to_ascii_uppercase(), args.trim().to_string()));
        pending.clear();
    }
    out
}

/// The stages: (image reference, instructions after its FROM).
fn stages() -> Vec<(String, Vec<(String, String)>)> {
    let mut stages: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for (keyword, args) in dockerfile() {
        if keyword == "FROM" {
            let image = args
                .split_whitespace()
                .find(|w| !w.starts_with("--"))
                .unwrap()
                .to_string();
            stages.push((image, Vec::new()));
        } else {
            stages
                .last_mut()
                .expect("an instruction before FROM")
                .1
                .push((keyword, args));
        }
    }
    stages
}

/// `name:tag` or `name@sha256:…`, with a version named (not `latest`, not missing).
fn assert_pinned(image: &str, place: &str) {
    if image.contains("@sha256:") {
        return;
    }
    let (_, tag) = image
        .rsplit_once(':')
        .filter(|(name, _)| !name.is_empty())
        .unwrap_or_else(|| panic!("{place}: image `{image}` has no tag (means `latest`)"));
    assert!(!tag.contains('/'), "{place}: `{image}` has no tag");
    assert_ne!(tag, "latest", "{place}: `{image}` is not pinned");
    // The version is in the tag (`postgres:17.5-bookworm`) or, as distroless names its images,
    // in the name (`cc-debian12:nonroot`: Debian 12, security updates within it).
    let last = image.rsplit('/').next().unwrap();
    assert!(
        last.chars().any(|c| c.is_ascii_digit()),
        "{place}: `{image}` names no version"
    );
}

fn version(v: &str) -> Vec<u32> {
    v.split('.').map(|p| p.parse().unwrap()).collect()
}

#[test]
fn dockerfile_pins_its_images_and_toolchain() {
    let stages = stages();
    assert!(stages.len() >= 2, "a build stage and a runtime stage");
    for (image, _) in &stages {
        assert_pinned(image, "Dockerfile");
    }
    // The toolchain: an exact x.y.z release, at least the declared MSRV.
    let (builder, _) = &stages[0];
    let tag = builder
        .strip_prefix("rust:")
        .unwrap_or_else(|| panic!("the build stage uses the official Rust image: {builder}"));
    let release = tag.split('-').next().unwrap();
    assert_eq!(
        release.split('.').count(),
        3,
        "toolchain pinned to an exact release: {builder}"
    );
    let msrv = env!("CARGO_PKG_RUST_VERSION");
    assert!(
        version(release) >= version(msrv),
        "the image's Rust {release} is older than rust-version {msrv}"
    );
}

#[test]
fn runtime_stage_runs_as_a_non_root_user_with_a_shell_free_health_check() {
    let stages = stages();
    let (image, runtime) = stages.last().unwrap();
    let user = runtime
        .iter()
        .rev()
        .find(|(k, _)| k == "USER")
        .map(|(_, a)| a.clone())
        .unwrap_or_else(|| panic!("the runtime stage ({image}) sets no USER: it would be root"));
    let name = user.split(':').next().unwrap();
    assert!(
        !matches!(name, "root" | "0" | ""),
        "runtime user is root: {user}"
    );
    // Nothing runs with a shell in the runtime stage (distroless has none).
    assert!(
        runtime.iter().all(|(k, _)| k != "RUN"),
        "RUN in the runtime stage needs a shell"
    );
    let (_, health) = runtime
        .iter()
        .find(|(k, _)| k == "HEALTHCHECK")
        .expect("a HEALTHCHECK");
    let cmd = health
        .split_once("CMD")
        .map(|(_, c)| c.trim())
        .expect("HEALTHCHECK CMD");
    assert!(cmd.starts_with('['), "exec form (no shell): {cmd}");
    let argv: Vec<String> = serde_json::from_str(cmd).unwrap();
    assert_eq!(argv[..2], ["snapgate", "healthcheck"], "{argv:?}");
    for (keyword, args) in runtime {
        if keyword == "ENTRYPOINT" || keyword == "CMD" {
            assert!(args.starts_with('['), "{keyword} in exec form: {args}");
        }
    }
}

fn compose() -> Yaml {
    YamlLoader::load_from_str(&read("docker-compose.yml"))
        .unwrap()
        .remove(0)
}

fn services() -> Vec<(String, Yaml)> {
    let doc = compose();
    doc["services"]
        .as_hash()
        .expect("services")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone()))
        .collect()
}

/// A service's command as words (list or string form).
fn command(service: &Yaml) -> Vec<String> {
    match &service["command"] {
        Yaml::Array(words) => words
            .iter()
            .map(|w| match w {
                Yaml::String(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .collect(),
        Yaml::String(s) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// The environment a service's containers get: its env files, then `environment` over them.
fn environment(service: &Yaml) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let files: Vec<String> = match &service["env_file"] {
        Yaml::String(f) => vec![f.clone()],
        Yaml::Array(fs) => fs.iter().map(|f| f.as_str().unwrap().to_string()).collect(),
        _ => Vec::new(),
    };
    for file in files {
        for line in read(&file).lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once('=').expect("KEY=value");
            env.insert(k.to_string(), v.to_string());
        }
    }
    if let Some(map) = service["environment"].as_hash() {
        for (k, v) in map {
            let v = match v {
                Yaml::String(s) => s.clone(),
                Yaml::Integer(i) => i.to_string(),
                Yaml::Boolean(b) => b.to_string(),
                other => panic!("environment value {other:?}"),
            };
            env.insert(k.as_str().unwrap().to_string(), v);
        }
    }
    env
}

/// Services other services wait for with `condition: service_completed_successfully`.
fn one_shot_jobs(services: &[(String, Yaml)]) -> Vec<String> {
    let mut jobs = Vec::new();
    for (_, s) in services {
        if let Some(deps) = s["depends_on"].as_hash() {
            for (name, dep) in deps {
                if dep["condition"].as_str() == Some("service_completed_successfully") {
                    jobs.push(name.as_str().unwrap().to_string());
                }
            }
        }
    }
    jobs
}

#[test]
fn every_service_has_a_health_check_and_a_pinned_image() {
    let services = services();
    let jobs = one_shot_jobs(&services);
    for (name, s) in &services {
        if let Some(image) = s["image"].as_str() {
            // The project's own image is built here (`build: .`), from the pinned Dockerfile.
            if s["build"].is_badvalue() {
                assert_pinned(image, &format!("service {name}"));
            }
        } else {
            assert!(
                !s["build"].is_badvalue(),
                "service {name}: no image, no build"
            );
        }
        let health = &s["healthcheck"];
        if health["disable"].as_bool() == Some(true) {
            // Only a job that runs to completion may go without: others wait for it to finish.
            assert!(
                jobs.contains(name),
                "service {name} disables its health check but is not a one-shot job"
            );
            assert_eq!(s["restart"].as_str(), Some("no"), "service {name}");
            continue;
        }
        let test = health["test"]
            .as_vec()
            .unwrap_or_else(|| panic!("service {name} has no healthcheck test (exec form)"));
        let words: Vec<&str> = test.iter().map(|w| w.as_str().unwrap()).collect();
        assert!(
            words[0] == "CMD" && words.len() > 1,
            "service {name}: exec form, not a shell: {words:?}"
        );
        if !s["build"].is_badvalue() {
            assert_eq!(
                words[1..3],
                ["snapgate", "healthcheck"],
                "service {name} (the snapgate image has no shell tools)"
            );
        }
    }
}

#[test]
fn replicas_share_one_master_key_and_one_mps_emulator() {
    let services = services();
    let serving: Vec<&(String, Yaml)> = services
        .iter()
        .filter(|(_, s)| command(s).first().map(String::as_str) == Some("serve"))
        .collect();
    assert!(!serving.is_empty(), "no snapgate serve service");
    let replicas: i64 = serving
        .iter()
        .map(|(_, s)| s["deploy"]["replicas"].as_i64().unwrap_or(1))
        .sum();
    assert!(replicas >= 2, "the compose file shows several replicas");

    let emulators: Vec<&(String, Yaml)> = services
        .iter()
        .filter(|(_, s)| command(s).first().map(String::as_str) == Some("emulator"))
        .collect();
    assert_eq!(emulators.len(), 1, "exactly one MPS emulator service");
    let (emulator_name, emulator) = emulators[0];
    let args = command(emulator);
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args[i + 1].clone())
    };
    let port = flag("--listen")
        .expect("the emulator listens on a given address")
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    let emulator_key = flag("--access-key").expect("the emulator's key pair");

    let mut master_keys = Vec::new();
    for (name, s) in &serving {
        let env = environment(s);
        let master = env.get("SNAPGATE__AUTH__MASTER_KEY").unwrap_or_else(|| {
            panic!("service {name}: no auth.master_key (each replica would make its own key file)")
        });
        master_keys.push(master.clone());
        let key = base64::engine::general_purpose::STANDARD
            .decode(master)
            .unwrap_or_else(|e| panic!("service {name}: the master key is not base64: {e}"));
        assert_eq!(key.len(), 32, "service {name}: the master key is 32 bytes");

        assert_eq!(
            env.get("SNAPGATE__MPS__ENDPOINT").map(String::as_str),
            Some(format!("http://{emulator_name}:{port}").as_str()),
            "service {name}: the shared emulator, not a built-in one each"
        );
        let pair = format!(
            "{}:{}",
            env.get("ALIBABA_CLOUD_ACCESS_KEY_ID").expect("MPS key id"),
            env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
                .expect("MPS key secret")
        );
        assert_eq!(
            pair, emulator_key,
            "service {name}: a key the emulator accepts"
        );
        assert!(
            s["depends_on"][emulator_name.as_str()]["condition"].as_str()
                == Some("service_healthy"),
            "service {name} waits for the emulator"
        );
    }
    master_keys.dedup();
    assert_eq!(master_keys.len(), 1, "one master key for every replica");
}

/// Every document of a YAML file.
fn yaml_docs(name: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(name)).unwrap()
}

/// The Kubernetes example (deploy/kubernetes/, schema-validated by `.ci/run`) agrees with the
/// image and the routes: the Dockerfile's uid, non-root and read-only, probes on the routes
/// that exist, two replicas with a disruption budget, and a ServiceAccount annotated for RRSA.
#[test]
fn kubernetes_example_agrees_with_the_image() {
    let deployment = yaml_docs("deploy/kubernetes/deployment.yaml").remove(0);
    assert_eq!(deployment["kind"].as_str(), Some("Deployment"));
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(2));
    let pod = &deployment["spec"]["template"]["spec"];
    let (_, runtime) = stages().pop().unwrap();
    let user = runtime
        .iter()
        .rev()
        .find(|(k, _)| k == "USER")
        .unwrap()
        .1
        .clone();
    let uid: i64 = user.split(':').next().unwrap().parse().unwrap();
    assert_eq!(pod["securityContext"]["runAsUser"].as_i64(), Some(uid));
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert!(
        !container["resources"]["requests"].is_badvalue(),
        "resources"
    );
    let http = container["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some("http"))
        .expect("a port named http");
    let listen = runtime
        .iter()
        .find(|(k, a)| k == "ENV" && a.starts_with("SNAPGATE__HTTP__LISTEN="))
        .map(|(_, a)| a.rsplit(':').next().unwrap().parse::<i64>().unwrap())
        .expect("the image's http.listen");
    assert_eq!(http["containerPort"].as_i64(), Some(listen));
    let probe = |name: &str| {
        container[name]["httpGet"]["path"]
            .as_str()
            .map(str::to_string)
    };
    assert_eq!(probe("readinessProbe").as_deref(), Some("/readyz"));
    assert_eq!(probe("livenessProbe").as_deref(), Some("/healthz"));
    let routes = read("src/http/health.rs");
    for path in ["/readyz", "/healthz"] {
        assert!(
            routes.contains(&format!("path = \"{path}\"")),
            "no route {path}"
        );
    }

    let account = yaml_docs("deploy/kubernetes/serviceaccount.yaml").remove(0);
    assert_eq!(
        pod["serviceAccountName"].as_str(),
        account["metadata"]["name"].as_str()
    );
    assert!(
        account["metadata"]["annotations"]["pod-identity.alibabacloud.com/role-name"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "the ServiceAccount names the RAM role for RRSA"
    );
    let namespace = yaml_docs("deploy/kubernetes/namespace.yaml").remove(0);
    assert_eq!(
        namespace["metadata"]["labels"]["pod-identity.alibabacloud.com/injection"].as_str(),
        Some("on"),
        "RRSA injection is switched on for the namespace"
    );
    let budget = yaml_docs("deploy/kubernetes/poddisruptionbudget.yaml").remove(0);
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}
