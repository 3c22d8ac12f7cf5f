//! Line charts as SVG: the points of a series scaled into a box, with the range it spans. Pure, so the
//! host tests check the geometry; the live session page draws them.

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

#[cfg(test)]
mod tests {
    use super::*;

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
