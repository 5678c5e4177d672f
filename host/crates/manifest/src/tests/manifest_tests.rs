use std::path::{Path, PathBuf};

use super::{Scratch, assert_err};
use crate::*;

fn parse(text: &str) -> anyhow::Result<Manifest> {
    Manifest::parse_str(text, Path::new("spin.toml"))
}

const HEAD: &str = r#"
spin_manifest_version = 2
[application]
name = "shop"
"#;

/// A valid manifest with one HTTP trigger and one component; tests append to it.
fn base(extra: &str) -> String {
    format!(
        r#"{HEAD}
[[trigger.http]]
route = "/..."
component = "web"

[component.web]
source = "web.wasm"
{extra}"#
    )
}

#[test]
fn base_manifest_is_valid() {
    let m = parse(&base("")).unwrap();
    assert_eq!(m.application.name, "shop");
    assert_eq!(m.http_triggers.len(), 1);
    assert_eq!(m.http_triggers[0].id, "web-http-trigger");
    assert!(m.warnings.is_empty());
}

#[test]
fn maximal_manifest() {
    let s = Scratch::new();
    s.write("static/index.html", "<h1>hi</h1>");
    s.write("static/css/site.css", "body{}");
    s.write("static/secret/key.pem", "k");
    s.write("static/notes.txt", "n");
    let text = r#"
spin_manifest_version = 2

[application]
name = "shop"
version = "0.1.0"
description = "A shop"
authors = ["Ann <ann@example.com>", "Bob"]
targets = ["spin-up:3.2", { path = "env.toml" }]

[application.trigger.http]
base = "/"

[application.trigger.redis]
address = "redis://{{ redis_host }}:6379"

[application.tool.bazaar]
replicas = 2

[variables]
redis_host = { default = "localhost", description = "Redis host" }
payment_api_key = { required = true, secret = true }
api_host = { default = "api.example.com" }

[[trigger.http]]
route = "/api/cart/..."
component = "cart"
executor = { type = "http" }

[[trigger.http]]
id = "pricing-private"
route = { private = true }
component = "pricing"

[[trigger.http]]
route = "/health"
static_response = { headers = { content-type = "text/plain" }, body = "ok" }

[[trigger.http]]
route = "/teapot"
static_response = { status_code = 418 }

[[trigger.http]]
route = "/static/..."
component = { source = "static.wasm", files = [{ source = "static", destination = "/" }] }

[[trigger.http]]
id = "spin-executor"
route = "/legacy"
component = "cart"
executor = { type = "spin" }

[[trigger.redis]]
channel = "orders-{{ api_host }}"
component = "order-worker"

[[trigger.redis]]
channel = "audit"
address = "redis://audit:6379"
component = "order-worker"

[component.cart]
source = "target/wasm32-wasip2/release/cart.wasm"
description = "The cart"
files = ["static/**/*", { source = "./assets/../static/css", destination = "/css" }]
exclude_files = ["static/secret/**", "**/*.txt"]
allowed_outbound_hosts = ["http://pricing.spin.internal", "redis://{{ redis_host }}:6379"]
allowed_http_hosts = ["example.com", "https://api.example.com:8443/", "insecure:allow-all"]
key_value_stores = ["default", "cart-cache", "session_store"]
sqlite_databases = ["default"]
ai_models = ["llama2-chat"]
environment = { RUST_LOG = "info", TEMPLATE_LOOKALIKE = "{{ api_host }}" }
targets = ["spin-up:3.2"]
dependencies_inherit_configuration = false

[component.cart.variables]
payment_api_key = "{{payment_api_key}}"
api_url = "https://{{ api_host }}/v1"

[component.cart.build]
command = "cargo build --target wasm32-wasip2 --release -p cart"
watch = ["cart/src/**/*.rs", "Cargo.toml"]

[component.cart.tool.spin-test]
source = "tests.wasm"

[component.pricing]
source = "/abs/pricing.wasm"

[component.pricing.build]
command = ["npm install", "npm run build"]
workdir = "pricing"

[component.order-worker]
source = "order.wasm"

[component.order-worker.dependencies]
"#;
    let path = s.write("spin.toml", text);
    let m = Manifest::load(s.path()).unwrap();
    let dir = std::path::absolute(s.path()).unwrap();

    assert_eq!(m.path, std::path::absolute(&path).unwrap());
    assert_eq!(m.dir, dir);
    assert_eq!(m.application.version.as_deref(), Some("0.1.0"));
    assert_eq!(m.application.description.as_deref(), Some("A shop"));
    assert_eq!(m.application.authors, vec!["Ann <ann@example.com>", "Bob"]);
    assert_eq!(
        m.application.redis_address.as_ref().unwrap().raw,
        "redis://{{ redis_host }}:6379"
    );
    assert_eq!(
        m.application.tool["bazaar"]["replicas"].as_integer(),
        Some(2)
    );

    assert_eq!(m.variables.len(), 3);
    assert_eq!(
        m.variables["payment_api_key"],
        VariableDecl {
            default: None,
            required: true,
            secret: true,
            description: None
        }
    );
    assert_eq!(
        m.variables["redis_host"].description.as_deref(),
        Some("Redis host")
    );

    // Triggers: ids follow Spin's generation scheme.
    let ids: Vec<&str> = m.http_triggers.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "cart-http-trigger",
            "pricing-private",
            "http-trigger1",
            "http-trigger2",
            "http-trigger3",
            "spin-executor"
        ]
    );
    assert_eq!(
        m.http_triggers[0].route,
        HttpRoute::Path("/api/cart/...".into())
    );
    assert_eq!(m.http_triggers[1].route, HttpRoute::Private);
    let health = m.http_triggers[2].static_response.as_ref().unwrap();
    assert_eq!(health.status_code, 200);
    assert_eq!(health.headers["content-type"], "text/plain");
    assert_eq!(health.body.as_deref(), Some("ok"));
    assert!(m.http_triggers[2].component.is_none());
    assert_eq!(
        m.http_triggers[3]
            .static_response
            .as_ref()
            .unwrap()
            .status_code,
        418
    );
    assert_eq!(
        m.http_triggers[3].static_response.as_ref().unwrap().body,
        None
    );
    assert_eq!(
        m.http_triggers[4].component.as_deref(),
        Some("http-trigger3-component")
    );

    let redis_ids: Vec<&str> = m.redis_triggers.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(redis_ids, ["order-worker-redis-trigger", "redis-trigger1"]);
    assert_eq!(
        m.redis_triggers[0].channel.parts,
        vec![
            TemplatePart::Literal("orders-".into()),
            TemplatePart::Variable("api_host".into())
        ]
    );
    assert!(m.redis_triggers[0].address.is_none());
    assert_eq!(
        m.redis_triggers[1].address.as_ref().unwrap().raw,
        "redis://audit:6379"
    );

    // Components.
    let ids: Vec<&str> = m.components.keys().map(String::as_str).collect();
    assert_eq!(
        ids,
        ["cart", "http-trigger3-component", "order-worker", "pricing"]
    );
    let cart = m.component("cart").unwrap();
    assert_eq!(
        cart.source,
        dir.join("target/wasm32-wasip2/release/cart.wasm")
    );
    assert_eq!(cart.description.as_deref(), Some("The cart"));
    assert_eq!(
        cart.files,
        vec![
            FileMount {
                source: dir.join("static/css/site.css"),
                destination: "/static/css/site.css".into()
            },
            FileMount {
                source: dir.join("static/index.html"),
                destination: "/static/index.html".into()
            },
            FileMount {
                source: dir.join("static/css"),
                destination: "/css".into()
            },
        ]
    );
    let hosts: Vec<&str> = cart
        .allowed_outbound_hosts
        .iter()
        .map(|t| t.raw.as_str())
        .collect();
    assert_eq!(
        hosts,
        [
            "http://pricing.spin.internal",
            "redis://{{ redis_host }}:6379",
            "http://example.com",
            "https://example.com",
            "http://api.example.com:8443",
            "https://api.example.com:8443",
            "*://*:*",
        ]
    );
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("allowed_http_hosts") && w.contains("[component.cart]"))
    );
    assert!(m.warnings.iter().any(|w| w.contains("base")));
    assert_eq!(
        cart.key_value_stores,
        ["default", "cart-cache", "session_store"]
    );
    assert_eq!(cart.sqlite_databases, ["default"]);
    assert_eq!(cart.ai_models, ["llama2-chat"]);
    assert_eq!(cart.environment["RUST_LOG"], "info");
    assert_eq!(cart.environment["TEMPLATE_LOOKALIKE"], "{{ api_host }}");
    assert_eq!(
        cart.variables["payment_api_key"].parts,
        vec![TemplatePart::Variable("payment_api_key".into())]
    );
    assert_eq!(cart.variables["api_url"].raw, "https://{{ api_host }}/v1");
    let build = cart.build.as_ref().unwrap();
    assert_eq!(
        build.command,
        BuildCommand::Shell("cargo build --target wasm32-wasip2 --release -p cart".into())
    );
    assert_eq!(build.workdir, dir);
    assert_eq!(build.watch, ["cart/src/**/*.rs", "Cargo.toml"]);
    assert_eq!(
        cart.tool["spin-test"]["source"].as_str(),
        Some("tests.wasm")
    );

    let pricing = m.component("pricing").unwrap();
    assert_eq!(pricing.source, PathBuf::from("/abs/pricing.wasm"));
    let pb = pricing.build.as_ref().unwrap();
    assert_eq!(
        pb.command,
        BuildCommand::Sequence(vec!["npm install".into(), "npm run build".into()])
    );
    assert_eq!(pb.shell_commands(), ["npm install", "npm run build"]);
    assert_eq!(pb.workdir, dir.join("pricing"));

    let inline = m.component("http-trigger3-component").unwrap();
    assert_eq!(inline.id, "http-trigger3-component");
    assert_eq!(inline.source, dir.join("static.wasm"));
    assert_eq!(
        inline.files,
        vec![FileMount {
            source: dir.join("static"),
            destination: "/".into()
        }]
    );
}

#[test]
fn load_accepts_a_file_path_and_reports_missing_files() {
    let s = Scratch::new();
    let p = s.write("app.toml", &base(""));
    assert_eq!(
        Manifest::load(&p).unwrap().path,
        std::path::absolute(&p).unwrap()
    );
    let missing = s.path().join("nope");
    assert_err(Manifest::load(&missing), &["nope", "cannot read manifest"]);
    // A directory without spin.toml names the spin.toml it looked for.
    assert_err(
        Manifest::load(s.path()),
        &["spin.toml: cannot read manifest"],
    );
}

#[test]
fn unknown_keys_are_reported_with_their_location() {
    let cases: Vec<(String, &str)> = vec![
        (
            format!("bogus = 1\n{}", base("")),
            "unknown key `bogus` in the top level",
        ),
        (
            base("").replace("name = \"shop\"", "name = \"shop\"\nnme = \"x\""),
            "unknown key `nme` in [application]",
        ),
        (
            base("").replace(
                "name = \"shop\"",
                "name = \"shop\"\ntrigger.http = { bse = \"/\" }",
            ),
            "unknown key `bse` in [application.trigger.http]",
        ),
        (
            base("").replace(
                "name = \"shop\"",
                "name = \"shop\"\ntrigger.redis = { adress = \"x\" }",
            ),
            "unknown key `adress` in [application.trigger.redis]",
        ),
        (
            base("[variables]\nfoo = { default = \"x\", secrett = true }"),
            "unknown key `secrett` in variable `foo` in [variables]",
        ),
        (
            base("[[trigger.http]]\nrout = \"/x\"\ncomponent = \"web\""),
            "unknown key `rout` in [[trigger.http]] #2",
        ),
        (
            base(
                "[[trigger.redis]]\nchannel = \"c\"\naddress = \"redis://h\"\ncomponent = \"web\"\nroute = \"/\"",
            ),
            "unknown key `route` in [[trigger.redis]] #1",
        ),
        (
            base(
                "[[trigger.http]]\nroute = { private = true, public = false }\ncomponent = \"web\"",
            ),
            "unknown key `public` in `route` of [[trigger.http]] #2",
        ),
        (
            base("[[trigger.http]]\nroute = \"/s\"\nstatic_response = { status = 200 }"),
            "unknown key `status` in `static_response` of [[trigger.http]] #2",
        ),
        (
            base(
                "[[trigger.http]]\nroute = \"/e\"\ncomponent = \"web\"\nexecutor = { type = \"http\", argv = \"x\" }",
            ),
            "unknown key `argv` in `executor` of [[trigger.http]] #2",
        ),
        (
            base("sorce = \"x\""),
            "unknown key `sorce` in [component.web]",
        ),
        (
            base("profile.release = { source = \"r.wasm\" }"),
            "unknown key `profile` in [component.web]",
        ),
        (
            base("[component.web.build]\ncommand = \"make\"\nwork_dir = \"x\""),
            "unknown key `work_dir` in [component.web.build]",
        ),
        (
            base("files = [{ source = \"a\", destination = \"/a\", mode = \"ro\" }]"),
            "unknown key `mode` in `files` entry #1 of [component.web]",
        ),
        (
            base("").replace(
                "source = \"web.wasm\"",
                "source = { url = \"https://x/w.wasm\", digest = \"sha256:0\", sha = \"y\" }",
            ),
            "unknown key `sha` in `source` of [component.web]",
        ),
        (
            base(
                "[[trigger.http]]\nroute = \"/i\"\ncomponent = { source = \"i.wasm\", filez = [] }",
            ),
            "unknown key `filez` in the inline component of [[trigger.http]] #2",
        ),
    ];
    for (text, expected) in cases {
        let e = assert_err(parse(&text), &[expected]);
        assert!(
            e.starts_with("spin.toml: "),
            "error does not name the file: {e}"
        );
    }
}

#[test]
fn bad_component_ids() {
    for (id, why) in [
        (
            "cart-2",
            "must start with an ASCII letter, `2` starts with `2`",
        ),
        ("Cart_x", "separated with `-`, not `_`"),
        ("-a", "must not be empty"),
        ("a--b", "must not be empty"),
        ("caRt", "word `caRt` mixes upper and lower case"),
    ] {
        let text = base(&format!("[component.{id}]\nsource = \"x.wasm\""));
        assert_err(
            parse(&text),
            &["invalid component id in [component.", id, why],
        );
    }
    // Upper-case words are fine in component ids.
    parse(&base("[component.API-v2]\nsource = \"x.wasm\"")).unwrap();
}

#[test]
fn bad_variable_names() {
    assert_err(
        parse(&base("[variables]\napi-host = { default = \"x\" }")),
        &["[variables]", "separated with `_`, not `-`"],
    );
    assert_err(
        parse(&base("[variables]\nApiHost = { default = \"x\" }")),
        &["ApiHost"],
    );
    assert_err(
        parse(&base("variables = { Bad = \"x\" }")),
        &["`variables` of [component.web]", "Bad"],
    );
}

#[test]
fn bad_store_labels() {
    assert_err(
        parse(&base("key_value_stores = [\"my store\"]")),
        &["`key_value_stores` of [component.web]", "my store"],
    );
    assert_err(
        parse(&base("sqlite_databases = [\"2nd\"]")),
        &["`sqlite_databases` of [component.web]"],
    );
}

#[test]
fn manifest_version_rules() {
    let v1 = r#"
spin_manifest_version = "1"
name = "old"
trigger = { type = "http", base = "/" }
[[component]]
id = "x"
source = "x.wasm"
"#;
    assert_err(
        parse(v1),
        &["spin.toml: ", "version 1 manifest", "spin doctor"],
    );
    assert_err(
        parse("spin_version = \"1\"\nname = \"old\""),
        &["version 1 manifest"],
    );
    assert_err(
        parse(&base("").replace("spin_manifest_version = 2", "spin_manifest_version = \"2\"")),
        &["integer 2, not the string"],
    );
    assert_err(
        parse(&base("").replace("spin_manifest_version = 2", "spin_manifest_version = 3")),
        &["unsupported `spin_manifest_version = 3`"],
    );
    assert_err(
        parse(&base("").replace("spin_manifest_version = 2", "")),
        &["missing `spin_manifest_version`"],
    );
}

#[test]
fn private_routes() {
    let m = parse(&base(
        "[[trigger.http]]\nroute = { private = true }\ncomponent = \"web\"",
    ))
    .unwrap();
    assert_eq!(m.http_triggers[1].route, HttpRoute::Private);
    // The second trigger for `web` cannot reuse `web-http-trigger`, so it gets a counter id.
    assert_eq!(m.http_triggers[1].id, "http-trigger1");
    assert_err(
        parse(&base(
            "[[trigger.http]]\nroute = { private = false }\ncomponent = \"web\"",
        )),
        &["[[trigger.http]] #2", "private = false"],
    );
    assert_err(
        parse(&base("[[trigger.http]]\nroute = {}\ncomponent = \"web\"")),
        &["missing required key `private`"],
    );
    assert_err(
        parse(&base("[[trigger.http]]\ncomponent = \"web\"")),
        &["missing required key `route` in [[trigger.http]] #2"],
    );
}

#[test]
fn templates_outside_allowed_fields_stay_literal() {
    // `nowhere` is not declared: fine, because none of these fields is templated in Spin.
    let m = parse(&base(
        "description = \"{{ nowhere }}\"\nenvironment = { X = \"{{ nowhere }}\" }\n\
         [[trigger.http]]\nroute = \"/{{ nowhere }}\"\nstatic_response = { body = \"{{ nowhere }}\" }",
    ))
    .unwrap();
    let web = m.component("web").unwrap();
    assert_eq!(web.description.as_deref(), Some("{{ nowhere }}"));
    assert_eq!(web.environment["X"], "{{ nowhere }}");
    assert_eq!(
        m.http_triggers[1].route,
        HttpRoute::Path("/{{ nowhere }}".into())
    );
    assert_eq!(
        m.http_triggers[1]
            .static_response
            .as_ref()
            .unwrap()
            .body
            .as_deref(),
        Some("{{ nowhere }}")
    );
}

#[test]
fn undeclared_template_variables_are_errors() {
    assert_err(
        parse(&base(
            "allowed_outbound_hosts = [\"https://{{ api_host }}\"]",
        )),
        &[
            "`allowed_outbound_hosts` entry of component `web`",
            "undeclared variable `api_host`",
        ],
    );
    assert_err(
        parse(&base(
            "[component.web.variables]\nurl = \"https://{{ api_host }}\"",
        )),
        &[
            "component `web` variable `url`",
            "undeclared variable `api_host`",
        ],
    );
    assert_err(
        parse(&base(
            "[[trigger.redis]]\nchannel = \"{{ chan }}\"\naddress = \"redis://h\"\ncomponent = \"web\"",
        )),
        &[
            "`channel` of [[trigger.redis]] #1",
            "undeclared variable `chan`",
        ],
    );
    assert_err(
        parse(&base("").replace(
            "name = \"shop\"",
            "name = \"shop\"\ntrigger.redis.address = \"redis://{{ host }}\"",
        )),
        &["[application.trigger.redis] address", "`host`"],
    );
    // Declared: fine.
    parse(&base("allowed_outbound_hosts = [\"https://{{api_host}}\"]\n[variables]\napi_host = { default = \"x\" }")).unwrap();
    // Malformed template syntax in a templated field.
    assert_err(
        parse(&base("allowed_outbound_hosts = [\"https://{{ api_host\"]")),
        &["unterminated", "allowed_outbound_hosts"],
    );
}

#[test]
fn template_parse() {
    let t = Template::parse("a{{x}}b{{  y_z2  }}}}").unwrap();
    assert_eq!(
        t.parts,
        vec![
            TemplatePart::Literal("a".into()),
            TemplatePart::Variable("x".into()),
            TemplatePart::Literal("b".into()),
            TemplatePart::Variable("y_z2".into()),
            TemplatePart::Literal("}}".into()),
        ]
    );
    assert_eq!(t.variables().collect::<Vec<_>>(), ["x", "y_z2"]);
    assert_eq!(t.render(|v| Ok(v.to_uppercase())).unwrap(), "aXbY_Z2}}");
    assert!(
        Template::parse("plain")
            .unwrap()
            .variables()
            .next()
            .is_none()
    );
    assert!(Template::parse("").unwrap().parts.is_empty());
    assert!(
        Template::parse("{{ }}")
            .unwrap_err()
            .to_string()
            .contains("empty")
    );
    assert!(
        Template::parse("{{ Bad }}")
            .unwrap_err()
            .to_string()
            .contains("lowercase")
    );
    assert!(
        Template::parse("x {{ a")
            .unwrap_err()
            .to_string()
            .contains("unterminated")
    );
}

#[test]
fn inline_component_ids() {
    let m = parse(&format!(
        r#"{HEAD}
[[trigger.http]]
id = "web"
route = "/a"
component = {{ source = "a.wasm" }}

[[trigger.http]]
id = "Not_Kebab"
route = "/b"
component = {{ source = "b.wasm" }}

[[trigger.http]]
route = "/c"
component = {{ source = "c.wasm" }}

[[trigger.redis]]
address = "redis://h"
channel = "x"
component = {{ source = "r.wasm" }}
"#
    ))
    .unwrap();
    let comps: Vec<(&str, &str)> = m
        .http_triggers
        .iter()
        .map(|t| (t.id.as_str(), t.component.as_deref().unwrap()))
        .collect();
    assert_eq!(
        comps,
        [
            ("web", "web-component"),
            ("Not_Kebab", "inline-component1"),
            ("http-trigger1", "http-trigger1-component")
        ]
    );
    assert_eq!(m.redis_triggers[0].id, "redis-trigger1");
    assert_eq!(m.redis_triggers[0].component, "redis-trigger1-component");
    assert!(
        m.component("inline-component1")
            .unwrap()
            .source
            .ends_with("b.wasm")
    );
    assert_eq!(m.components.len(), 4);
}

#[test]
fn inline_component_does_not_clobber_an_explicit_one() {
    let m = parse(&format!(
        r#"{HEAD}
[[trigger.http]]
id = "web"
route = "/a"
component = {{ source = "inline.wasm" }}

[[trigger.http]]
route = "/b"
component = "web-component"

[component.web-component]
source = "explicit.wasm"
"#
    ))
    .unwrap();
    assert!(
        m.component("web-component")
            .unwrap()
            .source
            .ends_with("explicit.wasm")
    );
    assert_eq!(
        m.http_triggers[0].component.as_deref(),
        Some("inline-component1")
    );
    assert!(
        m.component("inline-component1")
            .unwrap()
            .source
            .ends_with("inline.wasm")
    );
}

#[test]
fn component_references_must_exist() {
    assert_err(
        parse(&base(
            "[[trigger.http]]\nroute = \"/x\"\ncomponent = \"crat\"",
        )),
        &[
            "[[trigger.http]] #2 references component `crat`",
            "no [component.crat]",
        ],
    );
    assert_err(
        parse(&base(
            "[[trigger.redis]]\naddress = \"redis://h\"\nchannel = \"c\"\ncomponent = \"nope\"",
        )),
        &["[[trigger.redis]] #1 references component `nope`"],
    );
    assert_err(
        parse(&base(
            "[[trigger.redis]]\naddress = \"redis://h\"\nchannel = \"c\"",
        )),
        &["missing required key `component` in [[trigger.redis]] #1"],
    );
}

#[test]
fn duplicate_ids() {
    assert_err(
        parse(&base(
            "[[trigger.http]]\nid = \"t\"\nroute = \"/a\"\ncomponent = \"web\"\n[[trigger.http]]\nid = \"t\"\nroute = \"/b\"\ncomponent = \"web\"",
        )),
        &["duplicate trigger id `t`", "[[trigger.http]] #3"],
    );
    // A duplicated [component.x] table is already invalid TOML; still one line, with a position.
    assert_err(
        parse(&base("[component.web]\nsource = \"again.wasm\"")),
        &["spin.toml: invalid TOML at line", "column"],
    );
}

#[test]
fn malformed_toml_is_one_line() {
    let e = assert_err(
        parse("spin_manifest_version = 2\n[application\nname = 1"),
        &["spin.toml: invalid TOML at line 2"],
    );
    assert!(e.len() < 300, "{e}");
    assert_err(parse("x = \"unterminated\n"), &["invalid TOML at line 1"]);
}

#[test]
fn exactly_one_of_component_and_static_response() {
    assert_err(
        parse(&base(
            "[[trigger.http]]\nroute = \"/x\"\ncomponent = \"web\"\nstatic_response = { body = \"b\" }",
        )),
        &["[[trigger.http]] #2 has both `component` and `static_response`"],
    );
    assert_err(
        parse(&base("[[trigger.http]]\nroute = \"/x\"")),
        &["[[trigger.http]] #2 needs a `component` or a `static_response`"],
    );
    assert_err(
        parse(&base(
            "[[trigger.http]]\nroute = \"/x\"\nstatic_response = { status_code = 1000 }",
        )),
        &["status_code", "1000"],
    );
}

#[test]
fn unsupported_features_have_clear_errors() {
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            base("").replace(
                "source = \"web.wasm\"",
                "source = { url = \"https://x/w.wasm\", digest = \"sha256:0\" }",
            ),
            vec!["remote { url, digest } source", "only runs local sources"],
        ),
        (
            base("").replace(
                "source = \"web.wasm\"",
                "source = { registry = \"ttl.sh\", package = \"a:b\", version = \"1.0.0\" }",
            ),
            vec![
                "remote { registry, package, version } source",
                "only runs local sources",
            ],
        ),
        (
            base(
                "[[trigger.http]]\nroute = \"/w\"\ncomponent = \"web\"\nexecutor = { type = \"wagi\" }",
            ),
            vec!["[[trigger.http]] #2", "WAGI executor is not supported"],
        ),
        (
            base(
                "[[trigger.http]]\nroute = \"/w\"\ncomponent = \"web\"\nexecutor = { type = \"wasip3-unstable\" }",
            ),
            vec!["unknown executor type `wasip3-unstable`"],
        ),
        (
            base("[[trigger.mqtt]]\ncomponent = \"web\""),
            vec!["trigger type `mqtt`", "not supported"],
        ),
        (
            base("[trigger.redis]\ncomponent = \"web\""),
            vec!["write [[trigger.redis]]"],
        ),
        (
            base("").replace(
                "name = \"shop\"",
                "name = \"shop\"\ntrigger.http.base = \"/api\"",
            ),
            vec!["base = \"/api\" is not supported"],
        ),
        (
            base("").replace(
                "name = \"shop\"",
                "name = \"shop\"\ntrigger.mqtt.address = \"x\"",
            ),
            vec!["[application.trigger.mqtt]", "not supported"],
        ),
        (
            base("[[trigger.redis]]\nchannel = \"c\"\ncomponent = \"web\""),
            vec!["[[trigger.redis]] #1 has no `address`"],
        ),
        (
            base("[component.web.dependencies]\n\"a:b/c\" = \"1.0\""),
            vec!["`dependencies`", "not supported"],
        ),
        (
            base("[[trigger.http]]\nroute = \"/c\"\ncomponents = { x = \"web\" }"),
            vec!["`components`", "reserved"],
        ),
        (
            base("files = [\"/etc/passwd\"]"),
            vec!["`files` entry #1", "relative path"],
        ),
        (
            base("files = [\"../outside/*\"]"),
            vec!["`files` entry #1", "relative path"],
        ),
        (
            base("files = [{ source = \"a\", destination = \"rel\" }]"),
            vec!["absolute guest path"],
        ),
        (
            base("files = [3]"),
            vec!["`files` entry #1 of [component.web]", "found integer"],
        ),
        (
            base("[component.web.build]\nwatch = []"),
            vec!["missing required key `command` in [component.web.build]"],
        ),
        (
            base("[component.web.build]\ncommand = []"),
            vec!["must not be an empty array"],
        ),
        (
            base("allowed_http_hosts = [\"ftp://x\"]"),
            vec!["`allowed_http_hosts` in [component.web]"],
        ),
        (
            base("allowed_http_hosts = [\"example.com/path\"]"),
            vec!["no path"],
        ),
        (
            base("").replace("source = \"web.wasm\"", ""),
            vec!["missing required key `source` in [component.web]"],
        ),
        (
            base("environment = { X = 1 }"),
            vec!["`environment.X` in [component.web] must be a string, found integer"],
        ),
        (
            base("").replace("name = \"shop\"", ""),
            vec!["missing required key `name` in [application]"],
        ),
    ];
    for (text, fragments) in cases {
        let e = assert_err(parse(&text), &fragments);
        assert!(e.starts_with("spin.toml: "), "{e}");
    }
}

#[test]
fn variable_declaration_rules() {
    assert_err(
        parse(&base(
            "[variables]\nkey = { required = true, default = \"x\" }",
        )),
        &[
            "variable `key`",
            "`required = true` and also has a `default`",
        ],
    );
    assert_err(
        parse(&base("[variables]\nkey = { secret = true }")),
        &[
            "variable `key`",
            "needs either `required = true` or a `default`",
        ],
    );
    assert_err(
        parse(&base("[variables]\nkey = \"x\"")),
        &["variable `key` in [variables] must be a table"],
    );
    assert_err(
        parse(&base("[variables]\nkey = { default = 5 }")),
        &[
            "`default` in variable `key`",
            "must be a string, found integer",
        ],
    );
}

#[test]
fn files_globs_expand_relative_to_the_manifest() {
    let s = Scratch::new();
    s.write("assets/a.png", "");
    s.write("assets/b.jpg", "");
    s.write("assets/deep/c.png", "");
    s.write("readme.md", "");
    s.write(
        "spin.toml",
        &base("files = [\"assets/*.png\", \"./readme.md\", \"missing.txt\", \"assets/**/*.png\"]\nexclude_files = [\"assets/a.png\"]"),
    );
    let m = Manifest::load(&s.path().join("spin.toml")).unwrap();
    let dests: Vec<&str> = m
        .component("web")
        .unwrap()
        .files
        .iter()
        .map(|f| f.destination.as_str())
        .collect();
    // The excluded file is gone from both patterns; a literal that does not exist mounts nothing.
    assert_eq!(dests, ["/readme.md", "/assets/deep/c.png"]);
}
