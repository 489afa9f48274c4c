//! Training rows grouped by the employee whose access events they come from.
//!
//! The person a hospital's privacy guarantee protects is the employee (the staff account)
//! whose accesses are logged, and one employee has hundreds of rows. DP-SGD therefore samples,
//! bounds and clips *employees*, not rows ([`crate::dpsgd`]); this type is how it finds each
//! employee's rows.

use crate::ModelError;

/// A row-major feature matrix and, for every row, the employee it belongs to.
#[derive(Clone, Debug)]
pub struct EmployeeRows<'a> {
    /// Row-major data, `rows × width`, all finite.
    data: &'a [f32],
    /// Columns.
    width: usize,
    /// Row indices grouped by employee, each group in the order the rows were given.
    order: Vec<u32>,
    /// Employee `e`'s rows are `order[starts[e]..starts[e + 1]]`.
    starts: Vec<usize>,
}

impl<'a> EmployeeRows<'a> {
    /// Groups `data` (rows of `width` columns) by `employee_of_row` (any ids, one per row).
    pub fn new(
        data: &'a [f32],
        width: usize,
        employee_of_row: &[u64],
    ) -> Result<EmployeeRows<'a>, ModelError> {
        let rows = check_matrix(data, width)?;
        if employee_of_row.len() != rows {
            return Err(ModelError::Shape(format!(
                "{} employee ids for {rows} rows",
                employee_of_row.len()
            )));
        }
        let rows_u32 = u32::try_from(rows)
            .map_err(|_| ModelError::Shape(format!("{rows} rows do not fit a u32 index")))?;
        let mut order: Vec<u32> = (0..rows_u32).collect();
        // Stable: each employee's rows keep their given (time) order.
        order.sort_by_key(|&i| employee_of_row[i as usize]);
        let mut starts = Vec::new();
        let mut previous = None;
        for (k, &i) in order.iter().enumerate() {
            let e = employee_of_row[i as usize];
            if previous != Some(e) {
                starts.push(k);
                previous = Some(e);
            }
        }
        starts.push(order.len());
        Ok(EmployeeRows {
            data,
            width,
            order,
            starts,
        })
    }

    /// Every row its own "employee": the unit becomes one row (record-level DP, for tests and
    /// for data that names no employee).
    pub fn one_per_row(data: &'a [f32], width: usize) -> Result<EmployeeRows<'a>, ModelError> {
        let rows = check_matrix(data, width)?;
        let rows_u32 = u32::try_from(rows)
            .map_err(|_| ModelError::Shape(format!("{rows} rows do not fit a u32 index")))?;
        Ok(EmployeeRows {
            data,
            width,
            order: (0..rows_u32).collect(),
            starts: (0..=rows).collect(),
        })
    }

    /// Columns per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of employees (the `N` the sampling rate applies to).
    pub fn employees(&self) -> usize {
        self.starts.len() - 1
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.order.len()
    }

    /// The row indices of employee `e` (in the order given), empty past the last employee.
    pub fn rows_of(&self, e: usize) -> &[u32] {
        match (self.starts.get(e), self.starts.get(e + 1)) {
            (Some(&a), Some(&b)) => &self.order[a..b],
            _ => &[],
        }
    }

    /// Row `i`'s values (empty past the last row).
    pub fn row(&self, i: u32) -> &'a [f32] {
        let start = i as usize * self.width;
        self.data.get(start..start + self.width).unwrap_or(&[])
    }
}

/// Checks that `data` is a non-empty, finite matrix of rows of `width`; returns the row count.
fn check_matrix(data: &[f32], width: usize) -> Result<usize, ModelError> {
    if width == 0 || data.is_empty() || !data.len().is_multiple_of(width) {
        return Err(ModelError::Shape(format!(
            "{} values do not form a non-empty matrix of rows of {width}",
            data.len()
        )));
    }
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        return Err(ModelError::Shape(format!(
            "value {i} of the data is not finite"
        )));
    }
    Ok(data.len() / width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_grouped_by_employee_in_their_given_order() {
        let data = [0.0, 1.0, 2.0, 3.0, 4.0];
        let rows = EmployeeRows::new(&data, 1, &[7, 3, 7, 3, 9]).unwrap();
        assert_eq!(rows.employees(), 3);
        assert_eq!(rows.rows(), 5);
        assert_eq!(rows.rows_of(0), &[1, 3]);
        assert_eq!(rows.rows_of(1), &[0, 2]);
        assert_eq!(rows.rows_of(2), &[4]);
        assert!(rows.rows_of(3).is_empty());
        assert_eq!(rows.row(4), &[4.0]);
        assert!(rows.row(5).is_empty());
    }

    #[test]
    fn bad_shapes_and_values_are_refused() {
        assert!(EmployeeRows::new(&[1.0, 2.0], 1, &[0]).is_err());
        assert!(EmployeeRows::new(&[1.0, 2.0, 3.0], 2, &[0]).is_err());
        assert!(EmployeeRows::new(&[], 2, &[]).is_err());
        assert!(EmployeeRows::one_per_row(&[f32::NAN], 1).is_err());
        assert!(EmployeeRows::one_per_row(&[1.0], 0).is_err());
        assert_eq!(
            EmployeeRows::one_per_row(&[1.0, 2.0], 1)
                .unwrap()
                .employees(),
            2
        );
    }
}
