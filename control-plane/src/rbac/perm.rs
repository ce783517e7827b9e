//! Deciding whether a principal may do an action on an endpoint or entity.
//!
//! Endpoint rules follow Kong: the most specific matching rule that names
//! the action decides (exact path, then patterns whose `*` segments stand
//! for one path segment, more literal segments first, then `*`; a named
//! workspace before `*`), and a negative rule wins over a positive one at
//! the same level.
//!
//! Entity rules narrow further: a negative rule on an entity id (or `*`)
//! denies; a role that lists positive entity rules grants entity access
//! only through them; a role with no entity rules leaves entities to its
//! endpoint rules.
//!
//! Tag scopes (Gantry's addition): a role with `tags` counts only for
//! entities carrying at least one of them, and only on entity routes:
//! it never grants `/config`, `/rbac` or any other endpoint that is not
//! an entity collection.

use axum::http::Method;
use serde_json::Value;

/// Gantry has one workspace; rules may name it or `*`.
pub const WORKSPACE: &str = "default";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Read,
    Create,
    Update,
    Delete,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Read, Action::Create, Action::Update, Action::Delete];

    /// Kong's mapping of HTTP methods to actions.
    pub fn of_method(m: &Method) -> Action {
        match *m {
            Method::POST => Action::Create,
            Method::PUT | Method::PATCH => Action::Update,
            Method::DELETE => Action::Delete,
            _ => Action::Read,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == s)
    }

    fn bit(self) -> u8 {
        match self {
            Action::Read => 1,
            Action::Create => 2,
            Action::Update => 4,
            Action::Delete => 8,
        }
    }
}

/// A set of actions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actions(u8);

impl Actions {
    pub fn from_list(list: &[Action]) -> Actions {
        Actions(list.iter().fold(0, |acc, a| acc | a.bit()))
    }
    pub fn contains(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }
    pub fn names(self) -> Vec<&'static str> {
        Action::ALL
            .into_iter()
            .filter(|a| self.contains(*a))
            .map(Action::name)
            .collect()
    }
    /// The stored form: `read,create`.
    pub fn to_csv(self) -> String {
        self.names().join(",")
    }
    pub fn from_csv(s: &str) -> Actions {
        Actions::from_list(
            &s.split(',')
                .filter_map(|a| Action::parse(a.trim()))
                .collect::<Vec<_>>(),
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRule {
    pub workspace: String,
    pub endpoint: String,
    pub actions: Actions,
    pub negative: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityRule {
    pub entity_id: String,
    pub entity_type: String,
    pub actions: Actions,
    pub negative: bool,
}

/// One role's permissions, as a user holds them.
#[derive(Clone, Debug, Default)]
pub struct RoleGrant {
    pub name: String,
    /// Team scope: empty for none.
    pub tags: Vec<String>,
    pub endpoints: Vec<EndpointRule>,
    pub entities: Vec<EntityRule>,
}

/// An entity a request acts on.
#[derive(Clone, Debug)]
pub struct EntityRef {
    pub kind: String,
    pub id: String,
    pub tags: Vec<String>,
}

impl EntityRef {
    /// From an entity's stored or written value.
    pub fn of(kind: &str, v: &Value) -> EntityRef {
        EntityRef {
            kind: kind.to_string(),
            id: v["id"].as_str().unwrap_or_default().to_string(),
            tags: v["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect(),
        }
    }
}

/// Who makes a request and what they may do.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The name audit rows and revisions carry.
    pub name: String,
    /// Everything is allowed: the bootstrap token, or no authentication
    /// configured at all.
    pub unrestricted: bool,
    pub roles: Vec<RoleGrant>,
}

impl Principal {
    /// Who writes when the admin API has no token configured.
    pub fn anonymous() -> Principal {
        Principal {
            name: "anonymous".into(),
            unrestricted: true,
            roles: Vec::new(),
        }
    }

    /// The `--admin-token` holder.
    pub fn bootstrap() -> Principal {
        Principal {
            name: "bootstrap".into(),
            unrestricted: true,
            roles: Vec::new(),
        }
    }

    /// Whether the request may reach its handler at all. On entity routes
    /// tag-scoped roles count, and the handler then checks each entity.
    pub fn may_enter(&self, action: Action, path: &str, entity_route: bool) -> bool {
        if self.unrestricted {
            return true;
        }
        let roles: Vec<&RoleGrant> = self
            .roles
            .iter()
            .filter(|r| r.tags.is_empty() || entity_route)
            .collect();
        endpoint_allows(&roles, action, path)
    }

    /// Whether the action on this entity, at this path, is allowed.
    pub fn may_touch(&self, action: Action, path: &str, e: &EntityRef) -> bool {
        if self.unrestricted {
            return true;
        }
        let roles: Vec<&RoleGrant> = self
            .roles
            .iter()
            .filter(|r| r.tags.is_empty() || r.tags.iter().any(|t| e.tags.contains(t)))
            .collect();
        endpoint_allows(&roles, action, path) && entity_allows(&roles, action, e)
    }

    /// Whether a write of `e` is allowed, given the entities it references
    /// (a plugin's service, a route's service...). When only a tag-scoped
    /// role allows it, every reference must carry one of that role's tags
    /// too: a team may not attach its plugin to another team's service.
    pub fn may_write(&self, action: Action, path: &str, e: &EntityRef, refs: &[EntityRef]) -> bool {
        if self.unrestricted {
            return true;
        }
        let unscoped: Vec<&RoleGrant> = self.roles.iter().filter(|r| r.tags.is_empty()).collect();
        if endpoint_allows(&unscoped, action, path) && entity_allows(&unscoped, action, e) {
            return true;
        }
        let carries = |r: &RoleGrant, x: &EntityRef| r.tags.iter().any(|t| x.tags.contains(t));
        self.roles
            .iter()
            .filter(|r| !r.tags.is_empty() && carries(r, e))
            .any(|r| {
                let mut with = unscoped.clone();
                with.push(r);
                endpoint_allows(&with, action, path)
                    && entity_allows(&with, action, e)
                    && refs.iter().all(|x| carries(r, x))
            })
    }

    /// For a listing at `path`: `None` when unscoped roles allow reading it,
    /// else the tags that the entities shown must carry one of.
    pub fn list_scope(&self, path: &str) -> Option<Vec<String>> {
        if self.unrestricted {
            return None;
        }
        let unscoped: Vec<&RoleGrant> = self.roles.iter().filter(|r| r.tags.is_empty()).collect();
        if endpoint_allows(&unscoped, Action::Read, path) {
            return None;
        }
        let mut tags = Vec::new();
        for r in self.roles.iter().filter(|r| !r.tags.is_empty()) {
            let mut with = unscoped.clone();
            with.push(r);
            if endpoint_allows(&with, Action::Read, path) {
                tags.extend(r.tags.iter().cloned());
            }
        }
        tags.sort();
        tags.dedup();
        Some(tags)
    }
}

/// How specific a pattern is for `path`, when it matches: higher wins.
fn specificity(workspace: &str, pattern: &str, path: &str) -> Option<(u8, u8, usize)> {
    let ws = match workspace {
        WORKSPACE => 1,
        "*" => 0,
        _ => return None,
    };
    if pattern == "*" {
        return Some((ws, 0, 0));
    }
    let pat = normalize(pattern);
    if pat == path {
        return Some((ws, 2, usize::MAX));
    }
    let ps: Vec<&str> = pat.split('/').collect();
    let xs: Vec<&str> = path.split('/').collect();
    if ps.len() != xs.len() {
        return None;
    }
    let mut literal = 0;
    for (p, x) in ps.iter().zip(&xs) {
        if *p == "*" {
            if x.is_empty() {
                return None;
            }
        } else if p == x {
            literal += 1;
        } else {
            return None;
        }
    }
    Some((ws, 1, literal))
}

/// `services/` → `/services`: rules and paths compare in one form.
pub fn normalize(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    }
}

fn endpoint_allows(roles: &[&RoleGrant], action: Action, path: &str) -> bool {
    let path = normalize(path);
    // (specificity, negative) of every matching rule that names the action.
    let mut best: Option<((u8, u8, usize), bool)> = None;
    for r in roles.iter().flat_map(|r| &r.endpoints) {
        if !r.actions.contains(action) {
            continue;
        }
        let Some(s) = specificity(&r.workspace, &r.endpoint, &path) else {
            continue;
        };
        best = match best {
            Some((bs, bn)) if bs > s => Some((bs, bn)),
            Some((bs, bn)) if bs == s => Some((bs, bn || r.negative)),
            _ => Some((s, r.negative)),
        };
    }
    matches!(best, Some((_, false)))
}

fn entity_allows(roles: &[&RoleGrant], action: Action, e: &EntityRef) -> bool {
    let matching = |r: &&EntityRule| {
        r.actions.contains(action)
            && (r.entity_id == "*" || r.entity_id == e.id)
            && (r.entity_type == "*" || r.entity_type == e.kind || r.entity_id == e.id)
    };
    let all = roles.iter().flat_map(|r| &r.entities);
    if all.clone().filter(matching).any(|r| r.negative) {
        return false;
    }
    roles.iter().any(|r| {
        let positive: Vec<&EntityRule> = r.entities.iter().filter(|x| !x.negative).collect();
        positive.is_empty() || positive.iter().any(matching)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(endpoint: &str, actions: &[Action], negative: bool) -> EndpointRule {
        EndpointRule {
            workspace: "*".into(),
            endpoint: endpoint.into(),
            actions: Actions::from_list(actions),
            negative,
        }
    }

    fn user(roles: Vec<RoleGrant>) -> Principal {
        Principal {
            name: "u".into(),
            unrestricted: false,
            roles,
        }
    }

    fn role(tags: &[&str], endpoints: Vec<EndpointRule>) -> RoleGrant {
        RoleGrant {
            name: "r".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            endpoints,
            entities: Vec::new(),
        }
    }

    fn entity(id: &str, tags: &[&str]) -> EntityRef {
        EntityRef {
            kind: "services".into(),
            id: id.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    use Action::*;

    #[test]
    fn read_only_reads_and_nothing_else() {
        let u = user(vec![role(&[], vec![ep("*", &[Read], false)])]);
        assert!(u.may_enter(Read, "/services", true));
        assert!(u.may_enter(Read, "/rbac/users", false));
        for a in [Create, Update, Delete] {
            assert!(!u.may_enter(a, "/services", true));
        }
    }

    #[test]
    fn admin_is_everything_but_rbac() {
        let all = [Read, Create, Update, Delete];
        let mut rules = vec![ep("*", &all, false)];
        for p in ["/rbac", "/rbac/*", "/rbac/*/*", "/rbac/*/*/*"] {
            rules.push(ep(p, &all, true));
        }
        let u = user(vec![role(&[], rules)]);
        assert!(u.may_enter(Create, "/services", true));
        assert!(u.may_enter(Delete, "/config/rollback", false));
        assert!(!u.may_enter(Read, "/rbac/users", false));
        assert!(!u.may_enter(Create, "/rbac/users/x/roles/", false));
    }

    #[test]
    fn the_most_specific_rule_naming_the_action_decides() {
        let u = user(vec![role(
            &[],
            vec![
                ep("*", &[Read, Create], false),
                ep("/services/*", &[Read], true),
                ep("/services/open", &[Read], false),
            ],
        )]);
        assert!(u.may_enter(Read, "/services", true));
        assert!(!u.may_enter(Read, "/services/closed", true));
        assert!(u.may_enter(Read, "/services/open", true));
        // The pattern names only read, so create falls through to `*`.
        assert!(u.may_enter(Create, "/services/closed", true));
        // `*` is one segment.
        assert!(u.may_enter(Read, "/services/closed/routes", true));
    }

    #[test]
    fn negative_wins_at_the_same_level_across_roles() {
        let u = user(vec![
            role(&[], vec![ep("/services", &[Read], false)]),
            role(&[], vec![ep("/services", &[Read], true)]),
        ]);
        assert!(!u.may_enter(Read, "/services", true));
    }

    #[test]
    fn tag_scoped_roles_count_only_for_their_entities_and_entity_routes() {
        let all = [Read, Create, Update, Delete];
        let u = user(vec![role(&["team-a"], vec![ep("*", &all, false)])]);
        assert!(u.may_enter(Create, "/services", true));
        assert!(!u.may_enter(Create, "/config", false));
        assert!(!u.may_enter(Read, "/audit", false));
        assert!(u.may_touch(Create, "/services", &entity("1", &["team-a", "x"])));
        assert!(!u.may_touch(Create, "/services", &entity("1", &["team-b"])));
        assert!(!u.may_touch(Read, "/services/1", &entity("1", &[])));
        assert_eq!(u.list_scope("/services"), Some(vec!["team-a".to_string()]));
        let reader = user(vec![
            role(&["team-a"], vec![ep("*", &all, false)]),
            role(&[], vec![ep("*", &[Read], false)]),
        ]);
        assert_eq!(reader.list_scope("/services"), None);
        assert!(!reader.may_touch(Update, "/services/1", &entity("1", &["team-b"])));
        // Writes may reference only the team's own entities.
        let plugin = entity("p", &["team-a"]);
        assert!(u.may_write(Create, "/plugins", &plugin, &[entity("s", &["team-a"])]));
        assert!(!u.may_write(Create, "/plugins", &plugin, &[entity("s", &["team-b"])]));
        assert!(!u.may_write(Create, "/plugins", &entity("p", &[]), &[]));
    }

    #[test]
    fn entity_rules_narrow_a_role() {
        let mut r = role(&[], vec![ep("*", &[Read, Update], false)]);
        r.entities.push(EntityRule {
            entity_id: "1".into(),
            entity_type: "services".into(),
            actions: Actions::from_list(&[Read, Update]),
            negative: false,
        });
        let u = user(vec![r.clone()]);
        assert!(u.may_touch(Update, "/services/1", &entity("1", &[])));
        assert!(!u.may_touch(Update, "/services/2", &entity("2", &[])));
        r.entities = vec![EntityRule {
            entity_id: "2".into(),
            entity_type: "services".into(),
            actions: Actions::from_list(&[Update]),
            negative: true,
        }];
        let u = user(vec![r]);
        assert!(u.may_touch(Update, "/services/1", &entity("1", &[])));
        assert!(!u.may_touch(Update, "/services/2", &entity("2", &[])));
        assert!(u.may_touch(Read, "/services/2", &entity("2", &[])));
    }

    #[test]
    fn actions_round_trip() {
        let a = Actions::from_csv("read, delete,bogus");
        assert_eq!(a.to_csv(), "read,delete");
        assert_eq!(Actions::from_csv(&a.to_csv()), a);
    }
}
