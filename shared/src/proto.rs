//! Gantry's own protos, generated from `proto/` at build time.

pub mod value {
    //! `google.protobuf.Value` builders, for the Structs Gantry puts in
    //! its messages (per-route config, node and CSDS metadata).

    use envoy_types::pb::google::protobuf::value::Kind;
    use envoy_types::pb::google::protobuf::{ListValue, Struct, Value};

    pub fn string(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.to_string())),
        }
    }

    pub fn strings(v: &[String]) -> Value {
        Value {
            kind: Some(Kind::ListValue(ListValue {
                values: v.iter().map(|s| string(s)).collect(),
            })),
        }
    }

    pub fn object(fields: impl IntoIterator<Item = (String, Value)>) -> Value {
        Value {
            kind: Some(Kind::StructValue(Struct {
                fields: fields.into_iter().collect(),
            })),
        }
    }
}

pub mod plugins {
    //! `gantry.filters.http.plugins.v1`: Kong's plugins as one HTTP filter.
    include!(concat!(
        env!("OUT_DIR"),
        "/gantry.filters.http.plugins.v1.rs"
    ));

    /// The filter's name in a listener's HTTP filter chain, and the key of
    /// its per-route config.
    pub const FILTER_NAME: &str = "gantry.filters.http.plugins";
    pub const GATEWAY_TYPE: &str = "type.googleapis.com/gantry.filters.http.plugins.v1.Gateway";
    pub const PER_ROUTE_TYPE: &str = "type.googleapis.com/gantry.filters.http.plugins.v1.PerRoute";

    use super::typed_struct::{self, TypedStruct};
    use super::value::{object, string, strings};
    use envoy_types::pb::google::protobuf::value::Kind;
    use envoy_types::pb::google::protobuf::{Any, Struct, Value};
    use prost::Message;

    fn as_str(v: &Value, field: &str) -> Result<String, String> {
        match &v.kind {
            Some(Kind::StringValue(s)) => Ok(s.clone()),
            _ => Err(format!("PerRoute.{field}: not a string")),
        }
    }

    fn as_strings(v: &Value, field: &str) -> Result<Vec<String>, String> {
        match &v.kind {
            Some(Kind::ListValue(l)) => l.values.iter().map(|x| as_str(x, field)).collect(),
            Some(Kind::NullValue(_)) => Ok(Vec::new()),
            _ => Err(format!("PerRoute.{field}: not a list")),
        }
    }

    impl PerRoute {
        /// The message in proto3's JSON form (lowerCamelCase names), as a
        /// `google.protobuf.Struct`.
        pub fn to_struct(&self) -> Struct {
            let consumers = self
                .consumer_plugins
                .iter()
                .map(|(c, ids)| (c.clone(), object([("ids".to_string(), strings(&ids.ids))])));
            let mut fields: std::collections::BTreeMap<String, Value> = [
                ("routeId".to_string(), string(&self.route_id)),
                ("serviceId".to_string(), string(&self.service_id)),
                ("plugins".to_string(), strings(&self.plugins)),
                ("consumerPlugins".to_string(), object(consumers)),
                ("names".to_string(), strings(&self.names)),
            ]
            .into_iter()
            .collect();
            // Absent when empty, as proto3 JSON leaves defaults out: a
            // proxy from before these fields reads such routes unchanged.
            for (k, v) in [
                ("routeLabel", &self.route_label),
                ("serviceLabel", &self.service_label),
                ("logContext", &self.log_context),
            ] {
                if !v.is_empty() {
                    fields.insert(k.to_string(), string(v));
                }
            }
            Struct {
                fields: fields.into_iter().collect(),
            }
        }

        /// From proto3's JSON form, as a proto3 JSON parser reads it: field
        /// names in lowerCamelCase or as declared; an unknown field is an
        /// error, as it is to such a parser.
        pub fn from_struct(s: &Struct) -> Result<PerRoute, String> {
            let mut p = PerRoute::default();
            for (k, v) in &s.fields {
                match k.as_str() {
                    "routeId" | "route_id" => p.route_id = as_str(v, k)?,
                    "serviceId" | "service_id" => p.service_id = as_str(v, k)?,
                    "plugins" => p.plugins = as_strings(v, k)?,
                    "names" => p.names = as_strings(v, k)?,
                    "routeLabel" | "route_label" => p.route_label = as_str(v, k)?,
                    "serviceLabel" | "service_label" => p.service_label = as_str(v, k)?,
                    "logContext" | "log_context" => p.log_context = as_str(v, k)?,
                    "consumerPlugins" | "consumer_plugins" => {
                        let Some(Kind::StructValue(m)) = &v.kind else {
                            return Err(format!("PerRoute.{k}: not an object"));
                        };
                        for (c, ids) in &m.fields {
                            let Some(Kind::StructValue(ids)) = &ids.kind else {
                                return Err(format!("PerRoute.{k}.{c}: not an object"));
                            };
                            let mut entry = PluginIds::default();
                            for (f, v) in &ids.fields {
                                match f.as_str() {
                                    "ids" => entry.ids = as_strings(v, f)?,
                                    _ => return Err(format!("PluginIds: unknown field {f:?}")),
                                }
                            }
                            p.consumer_plugins.insert(c.clone(), entry);
                        }
                    }
                    _ => return Err(format!("PerRoute: unknown field {k:?}")),
                }
            }
            Ok(p)
        }

        /// As a route's per-filter config carries it: wrapped in
        /// `xds.type.v3.TypedStruct`, a type Envoy knows, so Envoy's own
        /// `/config_dump` can render routes that carry it (it cannot render
        /// an `Any` of a type it does not know).
        pub fn to_typed_struct(&self) -> Any {
            Any {
                type_url: typed_struct::TYPE.into(),
                value: TypedStruct {
                    type_url: PER_ROUTE_TYPE.into(),
                    value: Some(self.to_struct()),
                }
                .encode_to_vec(),
            }
        }

        /// From a per-filter config: wrapped in a TypedStruct (what
        /// gantry-cp sends), or the bare message (what it sent before).
        pub fn from_any(any: &Any) -> Result<PerRoute, String> {
            match any.type_url.as_str() {
                PER_ROUTE_TYPE => PerRoute::decode(any.value.as_slice()).map_err(|e| e.to_string()),
                typed_struct::TYPE => {
                    let ts =
                        TypedStruct::decode(any.value.as_slice()).map_err(|e| e.to_string())?;
                    if ts.type_url != PER_ROUTE_TYPE {
                        return Err(format!(
                            "a TypedStruct of type {:?}, not {PER_ROUTE_TYPE:?}",
                            ts.type_url
                        ));
                    }
                    PerRoute::from_struct(&ts.value.unwrap_or_default())
                }
                other => Err(format!(
                    "per-route config of type {other:?} is not supported"
                )),
            }
        }
    }

    /// Kong's log plugins (their entries carry the route and service).
    pub const LOG_PLUGINS: [&str; 4] = ["file-log", "http-log", "tcp-log", "udp-log"];

    /// The Kong plugins gantry-proxy runs. It refuses a config naming any
    /// other; the control plane lists the others per node at `/fleet`.
    pub const GANTRY_PROXY_RUNS: &[&str] = &[
        "acl",
        "correlation-id",
        "cors",
        "file-log",
        "http-log",
        "ip-restriction",
        "jwt",
        "key-auth",
        "prometheus",
        "proxy-cache",
        "rate-limiting",
        "request-size-limiting",
        "request-transformer",
        "request-validator",
        "response-transformer",
        "tcp-log",
        "udp-log",
    ];
}

pub mod route {
    //! `gantry.config.route.v1.RouteEntry`: one Kong route's share of a
    //! route configuration, for gantry-proxy nodes (see
    //! `proto/gantry/config/route/v1/route_entry.proto`, which these types
    //! follow field for field; derived by hand because that file imports
    //! Envoy's protos, which the build's protoc does not carry).

    use envoy_types::pb::envoy::config::route::v3::Route;

    pub const TYPE: &str = "type.googleapis.com/gantry.config.route.v1.RouteEntry";

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RouteEntry {
        /// `<route_configuration>/<Kong route id>`.
        #[prost(string, tag = "1")]
        pub name: String,
        /// The RDS name of the route configuration it belongs to.
        #[prost(string, tag = "2")]
        pub route_configuration: String,
        /// Envoy domain patterns; empty: in every virtual host.
        #[prost(string, repeated, tag = "3")]
        pub domains: Vec<String>,
        #[prost(message, repeated, tag = "4")]
        pub routes: Vec<Ranked>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Ranked {
        #[prost(message, optional, tag = "1")]
        pub route: Option<Route>,
        /// Routes are tried in ascending rank (bytewise) within a virtual host.
        #[prost(bytes = "vec", tag = "2")]
        pub rank: Vec<u8>,
    }

    impl prost::Name for RouteEntry {
        const NAME: &'static str = "RouteEntry";
        const PACKAGE: &'static str = "gantry.config.route.v1";
        fn full_name() -> String {
            "gantry.config.route.v1.RouteEntry".into()
        }
        fn type_url() -> String {
            TYPE.into()
        }
    }
}

pub mod typed_struct {
    //! `xds.type.v3.TypedStruct`: a message of any type as the type's URL
    //! and its proto3 JSON form in a `google.protobuf.Struct`. Envoy links
    //! it in (it renders it in `/config_dump`); envoy-types does not
    //! generate it, so its two fields are declared here.

    pub const TYPE: &str = "type.googleapis.com/xds.type.v3.TypedStruct";

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypedStruct {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<envoy_types::pb::google::protobuf::Struct>,
    }
}

#[cfg(test)]
mod tests {
    use super::plugins::{PER_ROUTE_TYPE, PerRoute, PluginIds};
    use prost::Message;

    fn sample() -> PerRoute {
        PerRoute {
            route_id: "r1".into(),
            service_id: "s1".into(),
            plugins: vec!["p1".into(), "p2".into()],
            consumer_plugins: [(
                "c1".to_string(),
                PluginIds {
                    ids: vec!["p3".into()],
                },
            )]
            .into_iter()
            .collect(),
            names: vec!["key-auth".into(), "rate-limiting".into()],
            ..Default::default()
        }
    }

    #[test]
    fn per_route_travels_as_a_typed_struct_and_bare() {
        let p = sample();
        let any = p.to_typed_struct();
        assert_eq!(any.type_url, super::typed_struct::TYPE);
        assert_eq!(PerRoute::from_any(&any), Ok(p.clone()));
        let bare = envoy_types::pb::google::protobuf::Any {
            type_url: PER_ROUTE_TYPE.into(),
            value: p.encode_to_vec(),
        };
        assert_eq!(PerRoute::from_any(&bare), Ok(p));
    }

    #[test]
    fn per_route_json_names_and_unknown_fields() {
        let s = sample().to_struct();
        let mut keys: Vec<&str> = s.fields.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "consumerPlugins",
                "names",
                "plugins",
                "routeId",
                "serviceId"
            ]
        );
        let mut odd = s.clone();
        odd.fields
            .insert("surprise".into(), odd.fields["names"].clone());
        assert!(
            PerRoute::from_struct(&odd)
                .unwrap_err()
                .contains("surprise")
        );
        let mut snake = s.clone();
        let v = snake.fields.remove("routeId").unwrap();
        snake.fields.insert("route_id".into(), v);
        assert_eq!(PerRoute::from_struct(&snake).unwrap().route_id, "r1");

        // Labels travel only when set, so routes without them are sent as
        // a proxy from before them reads them.
        let labelled = PerRoute {
            route_label: "users-api".into(),
            service_label: "user-service".into(),
            log_context: r#"{"route":{"id":"r1"},"service":{"id":"s1"}}"#.into(),
            ..sample()
        };
        let s = labelled.to_struct();
        assert!(s.fields.contains_key("routeLabel") && s.fields.contains_key("serviceLabel"));
        assert_eq!(PerRoute::from_struct(&s), Ok(labelled));
    }
}
