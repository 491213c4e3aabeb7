//! `sockprobe top`: a full-screen live view of the daemon's
//! `/api/v1/connections`, one row per process x endpoint x direction, rates
//! taken between two polls a second apart. Keys: c u r w e n sort, / filters,
//! q quits. A terminal is all it needs (SSH, `kubectl exec -it`).
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use ratatui::{
    Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Modifier, Style, Stylize},
    text::Line,
    widgets::{Block, Cell, Paragraph, Row, Table},
};

use super::daemon_client::Daemon;
use super::display::shown;
use crate::{aggregate::findings, error::Error};

const REFRESH: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SortBy {
    Connections,
    Unread,
    Resets,
    CloseWait,
    Exchanges,
    Name,
}

impl SortBy {
    fn from_key(c: char) -> Option<SortBy> {
        Some(match c {
            'c' => SortBy::Connections,
            'u' => SortBy::Unread,
            'r' => SortBy::Resets,
            'w' => SortBy::CloseWait,
            'e' => SortBy::Exchanges,
            'n' => SortBy::Name,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            SortBy::Connections => "conn/s",
            SortBy::Unread => "unread/s",
            SortBy::Resets => "rst/s",
            SortBy::CloseWait => "close_wait",
            SortBy::Exchanges => "exch/conn",
            SortBy::Name => "comm",
        }
    }
}

type Key = (String, String, String, String);

/// One row as shown: rates since the previous poll.
#[derive(Clone, Debug)]
struct Shown {
    row: findings::Row,
    conn_s: f64,
    exchanges_per_conn: Option<f64>,
    unread_s: f64,
    resets_s: f64,
}

struct App {
    sort: SortBy,
    filter: String,
    editing_filter: bool,
    rows: Vec<Shown>,
    previous: HashMap<Key, (Instant, findings::Row)>,
    status: String,
}

fn key_of(r: &findings::Row) -> Key {
    (r.comm.clone(), r.container.clone(), r.direction.clone(), r.endpoint.clone())
}

impl App {
    fn update(&mut self, rows: Vec<findings::Row>, now: Instant) {
        let mut shown = Vec::with_capacity(rows.len());
        let mut previous = HashMap::with_capacity(rows.len());
        for row in rows {
            let key = key_of(&row);
            let (conn_s, exchanges_per_conn, unread_s, resets_s) = match self.previous.get(&key) {
                Some((at, p)) => {
                    let dt = now.duration_since(*at).as_secs_f64().max(0.001);
                    let closed = row.closed.saturating_sub(p.closed);
                    let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
                    let exch = (closed > 0).then(|| row.exchanges.saturating_sub(p.exchanges) as f64 / closed as f64);
                    (
                        per(row.opened, p.opened),
                        exch,
                        per(row.unread_closes, p.unread_closes),
                        per(row.resets_received, p.resets_received),
                    )
                }
                None => (0.0, None, 0.0, 0.0),
            };
            let exchanges_per_conn =
                exchanges_per_conn.or((row.closed > 0).then(|| row.exchanges as f64 / row.closed as f64));
            previous.insert(key, (now, row.clone()));
            shown.push(Shown { row, conn_s, exchanges_per_conn, unread_s, resets_s });
        }
        self.previous = previous;
        self.rows = shown;
    }

    fn visible(&self) -> Vec<&Shown> {
        let f = self.filter.to_lowercase();
        let mut v: Vec<&Shown> = self
            .rows
            .iter()
            .filter(|s| {
                f.is_empty()
                    || [&s.row.comm, &s.row.container, &s.row.endpoint].iter().any(|t| t.to_lowercase().contains(&f))
                    || s.row.findings.iter().any(|t| t.contains(&f))
            })
            .collect();
        let by = |s: &Shown| -> f64 {
            match self.sort {
                SortBy::Connections => s.conn_s,
                SortBy::Unread => s.unread_s,
                SortBy::Resets => s.resets_s,
                SortBy::CloseWait => s.row.close_wait as f64,
                // Least reuse first.
                SortBy::Exchanges => -s.exchanges_per_conn.unwrap_or(f64::MAX),
                SortBy::Name => 0.0,
            }
        };
        v.sort_by(|a, b| {
            by(b)
                .partial_cmp(&by(a))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| b.row.findings.len().cmp(&a.row.findings.len()))
                .then_with(|| a.row.comm.cmp(&b.row.comm))
                .then_with(|| a.row.endpoint.cmp(&b.row.endpoint))
        });
        v
    }

    fn draw(&self, frame: &mut Frame) {
        let [head, body, foot] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(3), Constraint::Length(1)]).areas(frame.area());
        let filter = if self.editing_filter {
            format!("  filter: {}_", self.filter)
        } else if self.filter.is_empty() {
            String::new()
        } else {
            format!("  filter: {}", self.filter)
        };
        frame.render_widget(
            Paragraph::new(Line::from(format!(
                "sockprobe top  sorted by {}{filter}  {}",
                self.sort.name(),
                self.status
            )))
            .style(Style::new().add_modifier(Modifier::BOLD)),
            head,
        );
        let header = Row::new(
            [
                "COMM",
                "CONTAINER",
                "DIR",
                "ENDPOINT",
                "CONN/s",
                "EXCH/CONN",
                "UNREAD/s",
                "RST/s",
                "CW",
                "CW AGE",
                "FINDINGS",
            ]
            .map(Cell::from),
        )
        .style(Style::new().reversed());
        let rows = self.visible().into_iter().map(|s| {
            let r = &s.row;
            let style = if r.findings.is_empty() { Style::new() } else { Style::new().yellow() };
            Row::new(vec![
                // Names other processes chose: escaped (cmd/display.rs).
                Cell::from(shown(&r.comm).into_owned()),
                Cell::from(shown(&r.container).into_owned()),
                Cell::from(if r.direction == "outbound" { "out" } else { "in" }),
                Cell::from(shown(&r.endpoint).into_owned()),
                Cell::from(format!("{:.1}", s.conn_s)),
                Cell::from(s.exchanges_per_conn.map_or("-".to_string(), |e| format!("{e:.1}"))),
                Cell::from(format!("{:.1}", s.unread_s)),
                Cell::from(format!("{:.1}", s.resets_s)),
                Cell::from(r.close_wait.to_string()),
                Cell::from(if r.close_wait > 0 { format!("{:.0}s", r.close_wait_oldest_seconds) } else { "-".into() }),
                Cell::from(shown(&r.findings.join(",")).into_owned()),
            ])
            .style(style)
        });
        let widths = [
            Constraint::Length(16),
            Constraint::Length(14),
            Constraint::Length(3),
            Constraint::Length(22),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(5),
            Constraint::Length(6),
            Constraint::Min(10),
        ];
        frame.render_widget(Table::new(rows, widths).header(header).block(Block::bordered()), body);
        frame.render_widget(
            Paragraph::new(
                "sort: c conn/s  u unread/s  r rst/s  w close_wait  e exch/conn  n comm   / filter  Esc clear   q quit",
            )
            .style(Style::new().dim()),
            foot,
        );
    }

    /// Handles a key; false when it asks to quit.
    fn key(&mut self, code: KeyCode, modifiers: KeyModifiers) -> bool {
        if modifiers.contains(KeyModifiers::CONTROL) && code == KeyCode::Char('c') {
            return false;
        }
        if self.editing_filter {
            match code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) if self.filter.len() < 64 => self.filter.push(c),
                _ => {}
            }
            return true;
        }
        match code {
            KeyCode::Char('q') => return false,
            KeyCode::Char('/') => self.editing_filter = true,
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Char(c) => {
                if let Some(s) = SortBy::from_key(c) {
                    self.sort = s;
                }
            }
            _ => {}
        }
        true
    }
}

pub fn run(daemon: Daemon) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the async runtime", e))?;
    let fetch = |rt: &tokio::runtime::Runtime| -> Result<Vec<findings::Row>, String> {
        let body = rt.block_on(daemon.get("/api/v1/connections"))?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        serde_json::from_value(v["rows"].clone()).map_err(|e| e.to_string())
    };
    // Fail before taking over the terminal when there is no daemon.
    let first =
        fetch(&rt).map_err(|e| Error::Daemon(format!("{e} (sockprobe top needs a running `sockprobe run`)")))?;
    let mut terminal = ratatui::try_init().map_err(|e| Error::io("cannot use this terminal (top needs a TTY)", e))?;
    let mut app = App {
        sort: SortBy::Connections,
        filter: String::new(),
        editing_filter: false,
        rows: Vec::new(),
        previous: HashMap::new(),
        status: String::new(),
    };
    app.update(first, Instant::now());
    let mut next = Instant::now() + REFRESH;
    let result = (|| -> std::io::Result<()> {
        loop {
            terminal.draw(|f| app.draw(f))?;
            let wait = next.saturating_duration_since(Instant::now());
            if event::poll(wait)? {
                if let Event::Key(k) = event::read()?
                    && k.kind == KeyEventKind::Press
                    && !app.key(k.code, k.modifiers)
                {
                    return Ok(());
                }
                continue;
            }
            next = Instant::now() + REFRESH;
            match fetch(&rt) {
                Ok(rows) => {
                    app.update(rows, Instant::now());
                    app.status.clear();
                }
                Err(e) => app.status = format!("(stale: {e})"),
            }
        }
    })();
    ratatui::restore();
    result.map_err(|e| Error::io("terminal", e))
}
