//! Charts as SVG: line charts (the points of a series scaled into a box, with the range it spans) and bar
//! charts. Pure, so the host tests check the geometry; the live session and statistics pages draw them.

/// A series drawn in a `width` × `height` box: the `points` attribute of an SVG `polyline`, and the
/// smallest and largest values (the box's bottom and top).
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub points: String,
    pub min: f64,
    pub max: f64,
}

/// Scales `(x, y)` pairs into the box: x from the first to the last pair's x, y from the smallest to the
/// largest y (a flat series sits in the middle). Pairs with a y that is not finite are left out. `None`
/// when nothing is left.
pub fn line(series: &[(f64, f64)], width: f64, height: f64) -> Option<Line> {
    let finite: Vec<(f64, f64)> = series.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let (first, last) = (finite.first()?.0, finite.last()?.0);
    let min = finite.iter().map(|(_, y)| *y).fold(f64::INFINITY, f64::min);
    let max = finite.iter().map(|(_, y)| *y).fold(f64::NEG_INFINITY, f64::max);
    let x_of = |x: f64| if last > first { (x - first) / (last - first) * width } else { width / 2.0 };
    let y_of = |y: f64| if max > min { height - (y - min) / (max - min) * height } else { height / 2.0 };
    let points = finite.iter().map(|(x, y)| format!("{:.1},{:.1}", x_of(*x), y_of(*y))).collect::<Vec<_>>().join(" ");
    Some(Line { points, min, max })
}

/// One bar of a bar chart, in the box's coordinates (y grows downwards, as in SVG).
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

/// Bars for `values` side by side in a `width` × `height` box, the largest value reaching the top, with a
/// gap of a fifth of a slot between bars. A zero is a bar of no height.
pub fn bars(values: &[u64], width: f64, height: f64) -> Vec<Bar> {
    let largest = values.iter().copied().max().unwrap_or(0);
    let slot = width / values.len().max(1) as f64;
    values
        .iter()
        .enumerate()
        .map(|(index, value)| {
            let bar_height = if largest == 0 { 0.0 } else { *value as f64 / largest as f64 * height };
            Bar { x: index as f64 * slot + slot * 0.1, y: height - bar_height, width: slot * 0.8, height: bar_height }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_share_the_width_and_the_largest_fills_the_height() {
        let drawn = bars(&[0, 5, 10], 30.0, 100.0);
        assert_eq!(drawn.len(), 3);
        assert_eq!(drawn[2], Bar { x: 21.0, y: 0.0, width: 8.0, height: 100.0 });
        assert_eq!((drawn[1].y, drawn[1].height), (50.0, 50.0));
        assert_eq!(drawn[0].height, 0.0);
        assert!(bars(&[0, 0], 10.0, 10.0).iter().all(|bar| bar.height == 0.0));
        assert!(bars(&[], 10.0, 10.0).is_empty());
    }

    #[test]
    fn a_series_fills_the_box_from_its_first_to_its_last_point() {
        let drawn = line(&[(1.0, 2.0), (2.0, 1.0), (3.0, 0.5)], 100.0, 50.0).unwrap();
        assert_eq!(drawn.points, "0.0,0.0 50.0,33.3 100.0,50.0");
        assert_eq!((drawn.min, drawn.max), (0.5, 2.0));
    }

    #[test]
    fn flat_single_and_broken_series_still_draw_or_say_there_is_nothing() {
        assert_eq!(line(&[(1.0, 3.0), (2.0, 3.0)], 10.0, 10.0).unwrap().points, "0.0,5.0 10.0,5.0");
        assert_eq!(line(&[(4.0, 1.0)], 10.0, 10.0).unwrap().points, "5.0,5.0");
        assert_eq!(line(&[(1.0, f64::NAN), (2.0, 1.0)], 10.0, 10.0).unwrap().points, "5.0,5.0");
        assert_eq!(line(&[], 10.0, 10.0), None);
        assert_eq!(line(&[(1.0, f64::INFINITY)], 10.0, 10.0), None);
    }
}
