//! The chart of the performance document, drawn with plotters into a PNG:
//! throughput and latency per scenario, fan-out scaling, streaming MB/s and
//! throughput relative to direct. Text uses DejaVu Sans, embedded in the
//! binary, so no system font or font library is needed.

use std::path::Path;
use std::sync::Once;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::doc::LOCAL_C32_GOAL;
use super::{CONCURRENCY, Group, Results};

const FONT: &str = "sans-serif";
const C1: RGBColor = RGBColor(0x4c, 0x72, 0xb0);
const C32: RGBColor = RGBColor(0xdd, 0x84, 0x52);
const TARGET: RGBColor = RGBColor(0xc4, 0x4e, 0x52);

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

/// `41.2k`, `950`, `1.3M`.
fn human(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_owned()
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

struct Series {
    name: String,
    color: RGBColor,
    values: Vec<f64>,
}

/// Grouped bars, one group per label; `reference` draws a dashed-looking
/// horizontal line (e.g. a target).
fn bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    labels: &[String],
    series: &[Series],
    reference: Option<(f64, &str)>,
) -> anyhow::Result<()> {
    let n = labels.len().max(1);
    let top = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .chain(reference.map(|r| r.0))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .max_light_lines(1)
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_desc(y_desc)
        .y_label_formatter(&|v| human(*v))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(err)?;
    let k = series.len().max(1) as f64;
    let width = 0.8 / k;
    let value_style =
        TextStyle::from((FONT, 11).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (j, s) in series.iter().enumerate() {
        let color = s.color;
        let x0 = |i: usize| i as f64 - 0.4 + j as f64 * width;
        chart
            .draw_series(s.values.iter().enumerate().map(|(i, v)| {
                Rectangle::new([(x0(i), 0.0), (x0(i) + width * 0.9, *v)], color.filled())
            }))
            .map_err(err)?
            .label(s.name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        chart
            .draw_series(s.values.iter().enumerate().map(|(i, v)| {
                Text::new(human(*v), (x0(i) + width * 0.45, *v), value_style.clone())
            }))
            .map_err(err)?;
    }
    if let Some((value, name)) = reference {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(-0.5, value), (n as f64 - 0.5, value)],
                TARGET.stroke_width(2),
            )))
            .map_err(err)?
            .label(name.to_owned())
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], TARGET.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()
        .map_err(err)?;
    Ok(())
}

/// One labelled line: its legend, colour and (x, y) points.
type Line = (String, RGBColor, Vec<(f64, f64)>);

/// Lines over the number of machines.
fn lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    series: &[Line],
) -> anyhow::Result<()> {
    let x_max = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.0))
        .fold(1.0f64, f64::max)
        + 1.0;
    let top = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .max_light_lines(1)
        .x_desc("machines")
        .y_desc(y_desc)
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-6 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| human(*v))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(err)?;
    let value_style =
        TextStyle::from((FONT, 11).into_font()).pos(Pos::new(HPos::Left, VPos::Bottom));
    for (name, color, points) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(err)?;
        chart
            .draw_series(
                points
                    .iter()
                    .map(|p| Text::new(human(p.1), (p.0 + 0.2, p.1), value_style.clone())),
            )
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()
        .map_err(err)?;
    Ok(())
}

/// Draws the six panels into `path` (PNG).
pub(crate) fn draw(r: &Results, path: &Path) -> anyhow::Result<()> {
    register_font();
    let root = BitMapBackend::new(path, (1500, 1560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (head, body) = root.split_vertically(50);
    head.draw_text(
        &format!(
            "Switchyard benchmark: {} · {} CPUs · {} · medians of {} run(s)",
            r.machine.date, r.machine.cpus, r.machine.cpu, r.settings.reps
        ),
        &TextStyle::from((FONT, 20).into_font()),
        (20, 15),
    )
    .map_err(err)?;
    let panels = body.split_evenly((3, 2));

    let unary: Vec<_> = r
        .outcomes
        .iter()
        .filter(|o| o.scenario.group != Group::Stream && o.concurrency == CONCURRENCY[0])
        .map(|o| o.scenario.clone())
        .collect();
    let labels: Vec<String> = unary.iter().map(|s| s.short.clone()).collect();
    let pick = |key: &str, c: usize, f: fn(&super::Figures) -> f64| {
        r.figures(key, c).map_or(0.0, |x| f(&x))
    };
    let per_c = |f: fn(&super::Figures) -> f64| -> Vec<Series> {
        CONCURRENCY
            .iter()
            .zip([C1, C32])
            .map(|(&c, color)| Series {
                name: format!("c={c}"),
                color,
                values: unary.iter().map(|s| pick(&s.key, c, f)).collect(),
            })
            .collect()
    };
    bars(
        &panels[0],
        "Unary throughput",
        "calls/s",
        &labels,
        &per_c(|f| f.calls_per_s),
        None,
    )?;
    bars(
        &panels[1],
        "Unary latency at c=1",
        "µs",
        &labels,
        &[
            Series {
                name: "p50".into(),
                color: C1,
                values: unary
                    .iter()
                    .map(|s| pick(&s.key, 1, |f| f.p50_us))
                    .collect(),
            },
            Series {
                name: "p99".into(),
                color: C32,
                values: unary
                    .iter()
                    .map(|s| pick(&s.key, 1, |f| f.p99_us))
                    .collect(),
            },
        ],
        None,
    )?;

    let fan: Vec<_> = unary
        .iter()
        .filter(|s| s.group == Group::FanOut && s.tls.is_none())
        .collect();
    let fan_series = |f: fn(&super::Figures) -> f64| -> Vec<Line> {
        CONCURRENCY
            .iter()
            .zip([C1, C32])
            .map(|(&c, color)| {
                (
                    format!("c={c}"),
                    color,
                    fan.iter()
                        .map(|s| (s.fanout.unwrap_or(1) as f64, pick(&s.key, c, f)))
                        .collect(),
                )
            })
            .collect()
    };
    lines(
        &panels[2],
        "Fan-out scaling: throughput",
        "calls/s",
        &fan_series(|f| f.calls_per_s),
    )?;
    lines(
        &panels[3],
        "Fan-out scaling: p50 latency",
        "µs",
        &fan_series(|f| f.p50_us),
    )?;

    let streams: Vec<_> = r
        .outcomes
        .iter()
        .filter(|o| o.scenario.group == Group::Stream && o.concurrency == CONCURRENCY[0])
        .map(|o| o.scenario.clone())
        .collect();
    bars(
        &panels[4],
        &format!(
            "Server streaming {} × {} KiB",
            r.settings.stream_count,
            r.settings.stream_size / 1024
        ),
        "MB/s",
        &streams.iter().map(|s| s.short.clone()).collect::<Vec<_>>(),
        &CONCURRENCY
            .iter()
            .zip([C1, C32])
            .map(|(&c, color)| Series {
                name: format!("c={c}"),
                color,
                values: streams
                    .iter()
                    .map(|s| pick(&s.key, c, |f| f.mb_per_s))
                    .collect(),
            })
            .collect::<Vec<_>>(),
        None,
    )?;

    let direct = r.figures("direct", 32).map_or(0.0, |f| f.calls_per_s);
    let relative: Vec<_> = unary.iter().filter(|s| s.key != "direct").collect();
    bars(
        &panels[5],
        "Throughput relative to direct at c=32",
        "× direct calls/s",
        &relative.iter().map(|s| s.short.clone()).collect::<Vec<_>>(),
        &[Series {
            name: "c=32".into(),
            color: C32,
            values: relative
                .iter()
                .map(|s| {
                    if direct > 0.0 {
                        pick(&s.key, 32, |f| f.calls_per_s) / direct
                    } else {
                        0.0
                    }
                })
                .collect(),
        }],
        Some((LOCAL_C32_GOAL, &format!("local goal {LOCAL_C32_GOAL:.2}×"))),
    )?;
    root.present().map_err(err)?;
    Ok(())
}
