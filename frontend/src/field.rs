//! One labelled text field bound to a signal: the many form fields of the New job page and the
//! sponsor's campaign form, each a `<label>` around its `<input>` so that every control is named.

use leptos::prelude::*;

#[component]
pub fn TextField(
    id: &'static str,
    label: &'static str,
    value: RwSignal<String>,
    /// The default shown while the field is empty.
    #[prop(optional, into)]
    placeholder: MaybeProp<String>,
    /// The on-screen keyboard phones should show: `numeric`, `decimal`.
    #[prop(optional)]
    inputmode: Option<&'static str>,
    #[prop(optional)] maxlength: Option<u32>,
) -> impl IntoView {
    view! {
        <label class="field">
            {label}
            <input
                id=id
                type="text"
                inputmode=inputmode
                maxlength=maxlength
                placeholder=move || placeholder.get()
                prop:value=move || value.get()
                on:input=move |event| value.set(event_target_value(&event))
            />
        </label>
    }
}
