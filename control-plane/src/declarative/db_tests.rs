//! `replace` and `Sealer::load` against a real store: SQLite always, and
//! Postgres too when GANTRY_TEST_DATABASE_URL is set (as scripts/test.sh
//! does), each test in a fresh database file or schema.

use super::*;
use crate::seal::Sealer;
use crate::store::{Store, StoreConfig, Stored};
use serde_json::{Value, json};
use sqlx::AssertSqlSafe;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Sqlite];
    if std::env::var("GANTRY_TEST_DATABASE_URL").is_ok() {
        v.push(Backend::Postgres);
    }
    v
}

/// Fresh stores on one backend, removed again after the test.
struct Dbs {
    backend: Backend,
    opened: Vec<(Store, String)>,
}

impl Dbs {
    async fn open(&mut self) -> Store {
        let name = format!("gt_decl_{}", uuid::Uuid::new_v4().simple());
        let cfg = match self.backend {
            Backend::Sqlite => StoreConfig::new(format!(
                "sqlite://{}",
                std::env::temp_dir().join(format!("{name}.db")).display()
            )),
            Backend::Postgres => {
                let mut c =
                    StoreConfig::new(std::env::var("GANTRY_TEST_DATABASE_URL").unwrap_or_default());
                c.schema = Some(name.clone());
                c
            }
        };
        let st = Store::open(&cfg)
            .await
            .unwrap_or_else(|e| panic!("open {:?} store: {e}", self.backend));
        self.opened.push((st.clone(), name));
        st
    }

    async fn cleanup(self) {
        for (st, name) in self.opened {
            if let Backend::Postgres = self.backend {
                let _ = sqlx::query(AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
                )))
                .execute(st.pool())
                .await;
            }
            st.close().await;
            if let Backend::Sqlite = self.backend {
                for ext in ["db", "db-wal", "db-shm"] {
                    let _ =
                        std::fs::remove_file(std::env::temp_dir().join(format!("{name}.{ext}")));
                }
            }
        }
    }
}

macro_rules! on_each_backend {
    ($($name:ident),* $(,)?) => {
        mod each {
            $(
                #[tokio::test]
                async fn $name() {
                    for backend in super::backends() {
                        let mut dbs = super::Dbs { backend, opened: Vec::new() };
                        super::$name(&mut dbs).await;
                        dbs.cleanup().await;
                    }
                }
            )*
        }
    };
}

on_each_backend!(
    reimport_without_ids_changes_nothing_and_keeps_ids,
    export_then_import_is_lossless,
    route_moves_to_new_service_and_old_one_goes,
    other_instances_ids_take_over_same_names,
    renames_in_a_chain_apply_in_a_working_order,
    replace_resolves_names_for_callers_other_than_flatten,
);

async fn import(store: &Store, sealer: &Sealer, doc: &Value) -> Result<usize, DeclarativeError> {
    let desired = flatten(doc, sealer)?;
    let mut tx = store.begin_write("test").await?;
    let n = replace(&mut tx, desired).await?;
    tx.commit("config", "declarative import").await?;
    Ok(n)
}

fn id_of(all: &[Stored], kind: &str, field: &str, val: &str) -> String {
    all.iter()
        .find(|s| s.kind == kind && s.data[field] == val)
        .map(|s| s.id.clone())
        .unwrap_or_else(|| panic!("no {kind} {field}={val}"))
}

fn doc_a() -> Value {
    json!({
        "_format_version": "3.0",
        "services": [{"name": "a", "host": "a.local", "routes": [{"name": "r", "paths": ["/r"], "plugins": [{"name": "cors"}]}]}],
        "consumers": [{"username": "alice", "keyauth_credentials": [{}], "jwt_secrets": [{"key": "iss"}], "acls": [{"group": "g"}]}],
        "upstreams": [{"name": "u", "targets": [{"target": "10.0.0.1"}]}],
        "certificates": [{
            "cert": "-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n",
            "key": "-----BEGIN PRIVATE KEY-----\nMIIBBBBB\n-----END PRIVATE KEY-----\n",
            "snis": ["x.example.com"]
        }],
        "plugins": [{"name": "correlation-id"}],
    })
}

async fn reimport_without_ids_changes_nothing_and_keeps_ids(dbs: &mut Dbs) {
    let st = dbs.open().await;
    let sealer = Sealer::load(&st).await.unwrap();
    let n = import(&st, &sealer, &doc_a()).await.unwrap();
    assert_eq!(n, 12);
    let first = st.all_current().await.unwrap();
    assert!(first.iter().all(|s| !is_provisional(&s.id)));
    // Generated credentials survive a re-import that leaves them out.
    assert_eq!(import(&st, &sealer, &doc_a()).await.unwrap(), 0);
    let mut second = st.all_current().await.unwrap();
    let mut first = first;
    first.sort_by(|a, b| a.id.cmp(&b.id));
    second.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(first, second);
}

async fn export_then_import_is_lossless(dbs: &mut Dbs) {
    let st = dbs.open().await;
    let sealer = Sealer::load(&st).await.unwrap();
    import(&st, &sealer, &doc_a()).await.unwrap();
    let before = st.all_current().await.unwrap();
    let text = serde_yaml_ng::to_string(&export(&before, &sealer)).unwrap();
    // A second replica on the same database shares the key.
    let replica = Sealer::load(&st).await.unwrap();
    let doc = parse_document(text.as_bytes()).unwrap();
    assert_eq!(import(&st, &replica, &doc).await.unwrap(), 0);
    assert_eq!(st.all_current().await.unwrap(), before);

    // Into an empty database with a different key the secrets cannot open,
    // but with the exporting key everything comes back identical.
    let other = dbs.open().await;
    let other_sealer = Sealer::load(&other).await.unwrap();
    assert!(matches!(
        import(&other, &other_sealer, &doc).await,
        Err(DeclarativeError::Unseal(_))
    ));
    import(&other, &sealer, &doc).await.unwrap();
    let mut a = before.clone();
    let mut b = other.all_current().await.unwrap();
    a.sort_by(|x, y| x.id.cmp(&y.id));
    b.sort_by(|x, y| x.id.cmp(&y.id));
    let strip = |v: &mut Vec<Stored>| {
        v.iter_mut()
            .for_each(|s| _ = s.data.as_object_mut().map(|o| o.remove("updated_at")))
    };
    strip(&mut a);
    strip(&mut b);
    assert_eq!(a, b);
}

async fn route_moves_to_new_service_and_old_one_goes(dbs: &mut Dbs) {
    let st = dbs.open().await;
    let sealer = Sealer::load(&st).await.unwrap();
    import(&st, &sealer, &doc_a()).await.unwrap();
    let before = st.all_current().await.unwrap();
    let route = id_of(&before, "routes", "name", "r");
    let doc = json!({
        "_format_version": "3.0",
        "services": [{"name": "b", "host": "b.local", "routes": [{"name": "r", "paths": ["/r"]}]}],
    });
    import(&st, &sealer, &doc).await.unwrap();
    let after = st.all_current().await.unwrap();
    assert_eq!(
        id_of(&after, "routes", "name", "r"),
        route,
        "the route kept its id"
    );
    let b = id_of(&after, "services", "name", "b");
    assert_eq!(
        after.iter().find(|s| s.id == route).unwrap().data["service"]["id"],
        b
    );
    let kinds: Vec<&str> = after.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds.len(), 2, "everything else is gone: {kinds:?}");
}

async fn other_instances_ids_take_over_same_names(dbs: &mut Dbs) {
    let st = dbs.open().await;
    let sealer = Sealer::load(&st).await.unwrap();
    import(&st, &sealer, &doc_a()).await.unwrap();
    // The same names under other ids, as in another instance's export.
    let (s, r, c) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let doc = json!({
        "_format_version": "3.0",
        "services": [{"id": s, "name": "a", "host": "a.local", "routes": [{"id": r, "name": "r", "paths": ["/r"]}]}],
        "consumers": [{"id": c, "username": "alice", "keyauth_credentials": [{"key": "k1"}]}],
    });
    import(&st, &sealer, &doc).await.unwrap();
    let after = st.all_current().await.unwrap();
    assert_eq!(id_of(&after, "services", "name", "a"), s);
    assert_eq!(id_of(&after, "routes", "name", "r"), r);
    assert_eq!(id_of(&after, "consumers", "username", "alice"), c);
    assert_eq!(after.len(), 4);
}

async fn renames_in_a_chain_apply_in_a_working_order(dbs: &mut Dbs) {
    let st = dbs.open().await;
    let sealer = Sealer::load(&st).await.unwrap();
    let (x, y) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let doc = json!({"_format_version": "3.0", "services": [{"id": x, "name": "one", "host": "h"}, {"id": y, "name": "two", "host": "h"}]});
    import(&st, &sealer, &doc).await.unwrap();
    // x takes y's name while y takes a new one; x comes first in the list.
    let doc = json!({"_format_version": "3.0", "services": [{"id": x, "name": "two", "host": "h"}, {"id": y, "name": "three", "host": "h"}]});
    assert_eq!(import(&st, &sealer, &doc).await.unwrap(), 2);
    let after = st.all_current().await.unwrap();
    assert_eq!(id_of(&after, "services", "name", "two"), x);
    assert_eq!(id_of(&after, "services", "name", "three"), y);
    // A true swap cannot be ordered and says which entity failed.
    let doc = json!({"_format_version": "3.0", "services": [{"id": x, "name": "three", "host": "h"}, {"id": y, "name": "two", "host": "h"}]});
    match import(&st, &sealer, &doc).await {
        Err(DeclarativeError::Entity {
            collection: "services",
            source: crate::entities::EntityError::Unique(_),
            ..
        }) => {}
        other => panic!("expected a uniqueness error, got {other:?}"),
    }
}

async fn replace_resolves_names_for_callers_other_than_flatten(dbs: &mut Dbs) {
    let st = dbs.open().await;
    let sealer = Sealer::load(&st).await.unwrap();
    let d = |n| crate::entities::def(n).unwrap();
    let desired = vec![
        (d("services"), json!({"name": "s", "host": "h"})),
        (
            d("routes"),
            json!({"name": "r", "paths": ["/"], "service": "s"}),
        ),
    ];
    let mut tx = st.begin_write("test").await.unwrap();
    assert_eq!(replace(&mut tx, desired).await.unwrap(), 2);
    let bad = vec![(
        d("routes"),
        json!({"name": "r", "paths": ["/"], "service": "ghost"}),
    )];
    match replace(&mut tx, bad).await {
        Err(
            e @ DeclarativeError::Entity {
                collection: "routes",
                ..
            },
        ) => {
            assert!(e.to_string().starts_with("routes 'r': "))
        }
        other => panic!("expected a reference error, got {other:?}"),
    }
    drop(tx);
    let _ = sealer;
}
